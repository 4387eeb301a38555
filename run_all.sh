#!/usr/bin/env bash
# Reproduce the five papers: every table row and figure of reproduce/experiments.py (searches with
# the papers' seeds, post-search steps, selections, trainings with each paper's protocol,
# measurements), then OUT/summary.md: one table per paper table, ours beside theirs.
#
#   bash run_all.sh [--data DIR] [--imagenet DIR] [--voc DIR] [--methods msg_das,...] [--out results]
#   bash run_all.sh --smoke      # every kind of experiment, tiny, on the built-in synthetic data
#   bash run_all.sh --plan       # every stage with its command, resources, GPU-hours and state
#
# `bash run_all.sh --help` lists every option. Run it again after an interruption: finished
# stages are skipped, started ones continue with --resume.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" exec "${PYTHON:-python}" -m reproduce "$@"
