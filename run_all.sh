#!/usr/bin/env bash
# Reproduce the five papers: every table row and figure of reproduce/experiments.py (searches with
# the papers' seeds, post-search steps, selections, trainings with each paper's protocol,
# measurements) as a DAG of stages, then OUT/summary.md: one table per paper table, ours beside theirs.
#
#   bash run_all.sh [--data DIR] [--imagenet DIR] [--imagenet16 DIR] [--voc DIR] [--methods msg_das,...] [--out results]
#   bash run_all.sh --gpus 8                 # up to 8 stages at once, each on GPUs of its own
#   bash run_all.sh --smoke --jobs 2         # every kind of experiment, tiny, synthetic data, 2 stages at once on CPUs
#   bash run_all.sh --executor slurm --partition P [--gpus_per_job G] [--time H] [--account A]
#   bash run_all.sh --plan                   # every stage (command, resources, GPU-hours, state), row and figure;
#                                            # the totals
#
# `bash run_all.sh --help` lists every option. Run it again after an interruption or a failure:
# finished stages are kept, started ones continue with --resume.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" exec "${PYTHON:-python}" -m reproduce "$@"
