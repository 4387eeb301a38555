#!/usr/bin/env bash
# Reproduce the five papers: every search with the seeds the paper used, the evaluation of every
# searched genotype with its paper's protocol, then OUT/summary.md (and .json) beside the papers'
# numbers (reproduce/paper_results.json), with links to the drawn cells.
#
#   bash run_all.sh [--methods msg_das,entrannas,darts_pt,darts_pd,d_darts] [--data DIR]
#                   [--imagenet DIR] [--gpus N] [--seeds "0 1 2"] [--out results]
#   bash run_all.sh --smoke      # the same pipeline, tiny, on the built-in synthetic data (minutes, CPU)
#
#   --data DIR      CIFAR-10/100 and SVHN (downloaded there by torchvision when missing)
#   --imagenet DIR  also the ImageNet runs: transfer of the best CIFAR cells, EnTranNAS and DARTS-PD searches
#   --gpus N        evaluation trainings (and ImageNet searches) under torchrun --nproc_per_node N
#   --seeds "..."   search seeds for every method instead of each paper's own
#
# Each stage is one run folder under OUT (its log in log.txt, the script's console in console.txt).
# A finished stage (its output file exists) is skipped; a started one continues with --resume;
# finished results are never overwritten. After an interruption, run the same command again.
set -euo pipefail
cd "$(dirname "$0")"

METHODS=msg_das,entrannas,darts_pt,darts_pd,d_darts
DATA=data IMAGENET="" GPUS=1 SEEDS="" OUT="" SMOKE=0
PYTHON=${PYTHON:-python}
while (($#)); do
  case $1 in
    --methods) METHODS=$2; shift 2 ;;
    --data) DATA=$2; shift 2 ;;
    --imagenet) IMAGENET=$2; shift 2 ;;
    --gpus) GPUS=$2; shift 2 ;;
    --seeds) SEEDS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --smoke) SMOKE=1; shift ;;
    -h | --help) sed -n '2,18p' "$0" | cut -c3-; exit 0 ;;
    *) echo "run_all.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done

if ((SMOKE)); then
  # Tiny settings: 3 cells, 4 channels, 8x8 synthetic images, one epoch of 64 images (2 batches) per stage;
  # one run of each kind (the first seed, the main variants), so that it takes minutes on a CPU.
  OUT=${OUT:-results/smoke}
  TINY=(--subset 64 --image_size 8 --workers 0 --epochs 1 --layers 3 --init_channels 4 --batch_size 32)
  SEARCH=("${TINY[@]}") EVAL=("${TINY[@]}")
  if [[ -n $IMAGENET ]]; then echo "run_all.sh: --smoke runs on synthetic data only; drop --imagenet" >&2; exit 2; fi
else
  OUT=${OUT:-results}
  SEARCH=(--data "$DATA" --download) EVAL=(--data "$DATA" --download)
fi
mkdir -p "$OUT"
echo "run_all.sh: results in $OUT ($( ((SMOKE)) && echo smoke || echo full) mode)"

# The dataset actually used for a paper's dataset: the synthetic one in smoke mode.
data() { if ((SMOKE)); then echo synthetic; else echo "$1"; fi; }
# The paper's seeds, or --seeds; in smoke mode the first one.
seeds() { local s=(${SEEDS:-$1}); if ((SMOKE)); then echo "${s[0]}"; else echo "${s[@]}"; fi; }
# full LIST [SMOKE_LIST]: what to loop over, the smaller list in smoke mode.
full() { if ((SMOKE)) && (($# > 1)); then echo "$2"; else echo "$1"; fi; }
# Several GPUs: torchrun, one process per GPU.
launch() { if ((GPUS > 1)); then torchrun --standalone --nproc_per_node "$GPUS" "$@"; else "$PYTHON" "$@"; fi; }

# stage DIR DONE CMD...: run `CMD --save DIR --resume` unless DIR/DONE exists.
stage() {
  local dir=$1 done=$2; shift 2
  if [[ -e $dir/$done ]]; then echo "  done     $dir"; return; fi
  mkdir -p "$dir"
  echo "  running  $dir   (log: $dir/log.txt)"
  if ! "$@" --save "$dir" --resume >>"$dir/console.txt" 2>&1; then
    tail -n 15 "$dir/console.txt" >&2
    echo "run_all.sh: the stage in $dir failed (console: $dir/console.txt); run again to continue" >&2
    exit 1
  fi
}

# evaluate METHOD PAPER_ROW DATASET GENOTYPE SEARCH_DIRS DIR [train.py flags]: train the genotype
# from scratch with the method's train.py, and list the run for the summary.
evaluate() {
  local method=$1 row=$2 dataset=$3 genotype=$4 searches=$5 dir=$6; shift 6
  stage "$dir" summary.json launch "$method/train.py" --arch "$genotype" "${EVAL[@]}" --dataset "$(data "$dataset")" "$@"
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$method" "$row" "$dataset" "$genotype" "$searches" "$dir" >>"$OUT/runs.tsv"
}

# The evaluation folder with the lowest final test error, among those given.
best_eval() { "$PYTHON" -m reproduce.summary --best final_top1 "$@"; }
genotype_of() { "$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1] + "/args.json"))["arch"])' "$1"; }

# ---------------------------------------------------------------- MSG-DAS (Sec. 4.2-4.4)
msg_das() {
  local out=$OUT/msg_das evals=() s run
  for s in $(seeds "0 1 2"); do  # Sec. 4.4: seeds 0, 1, 2; K=2, batch 128, lambda 0.01
    run=$out/search-s$s
    stage "$run" summary.json "$PYTHON" msg_das/train_search.py "${SEARCH[@]}" --dataset "$(data cifar10)" --seed "$s"
    evaluate msg_das "MSG-DAS (B=128)" cifar10 "$run/genotype.json" "$run" "$out/eval-s$s" --seed "$s"
    evals+=("$out/eval-s$s")
  done
  if [[ -n $IMAGENET ]]; then  # Table 2: the CIFAR-10 cell on ImageNet
    run=$(best_eval "${evals[@]}")
    evaluate msg_das "MSG-DAS" imagenet "$(genotype_of "$run")" "$(dirname "$(genotype_of "$run")")" \
      "$out/imagenet" --data "$IMAGENET"
  fi
}

# ---------------------------------------------------------------- EnTranNAS (Sec. 4.2, 4.3)
entrannas() {
  local out=$OUT/entrannas variant row flags s e runs best
  for variant in $(full "plain dst ext" "plain dst"); do
    case $variant in  # Table 6
      plain) row="EnTranNAS + cutout" flags=() ;;
      dst) row="EnTranNAS-DST + cutout" flags=(--dst) ;;
      ext) row="EnTranNAS (12 operations) + cutout" flags=(--search_space entrannas_ext) ;;
    esac
    runs=()
    for s in $(seeds "0 1 2 3 4"); do  # "We run our search for 5 times and choose ... the best validation accuracy"
      stage "$out/$variant-s$s" summary.json "$PYTHON" entrannas/train_search.py "${SEARCH[@]}" \
        --dataset "$(data cifar10)" --seed "$s" "${flags[@]}"
      runs+=("$out/$variant-s$s")
    done
    best=$("$PYTHON" -m reproduce.summary --best valid_top1 "${runs[@]}")
    for e in $(seeds "0 1 2 3 4"); do  # "the mean error rate ... of 5 independent runs"
      evaluate entrannas "$row" cifar10 "$best/genotype.json" "$best" "$out/$variant-eval-e$e" --seed "$e"
    done
    if [[ $variant == plain && -n $IMAGENET ]]; then  # Table 7, first row: the CIFAR-10 cell transferred
      evaluate entrannas "EnTranNAS (CIFAR-10)" imagenet "$best/genotype.json" "$best" "$out/imagenet-transfer" \
        --data "$IMAGENET"
    fi
  done
  if [[ -n $IMAGENET ]]; then  # Table 7: searched on ImageNet (8 GPUs in the paper); DST with lambda 0.2
    for variant in plain dst; do
      case $variant in
        plain) row="EnTranNAS (ImageNet)" flags=() ;;
        dst) row="EnTranNAS-DST (ImageNet) †" flags=(--dst) ;;
      esac
      stage "$out/imagenet-$variant" summary.json launch entrannas/train_search.py --dataset imagenet \
        --data "$IMAGENET" "${flags[@]}"
      evaluate entrannas "$row" imagenet "$out/imagenet-$variant/genotype.json" "$out/imagenet-$variant" \
        "$out/imagenet-$variant-eval" --data "$IMAGENET"
    done
  fi
}

# ---------------------------------------------------------------- DARTS-PT (Sec. 5, Tables 2-3)
darts_pt() {
  local out=$OUT/darts_pt space dataset s run evals=() proj flags
  for space in $(full "darts s1 s2 s3 s4" darts); do
    for dataset in $(full "cifar10 cifar100 svhn" cifar10); do
      if [[ $space == darts && $dataset != cifar10 ]]; then continue; fi  # Table 2: CIFAR-10 only
      for s in $(seeds "0 1 2 3"); do  # four seeds (the authors' published cells are seeds 0-3)
        run=$out/$space-$dataset-s$s
        stage "$run" summary.json "$PYTHON" darts_pt/train_search.py "${SEARCH[@]}" --dataset "$(data "$dataset")" \
          --search_space "$space" --seed "$s"
        proj=(); if ((SMOKE)); then proj=(--proj_intv 1); fi
        stage "$run/projection_pt" summary.json "$PYTHON" darts_pt/projection.py --search_dir "$run" "${proj[@]}"
        # RobustDARTS' protocol: CIFAR-100 and SVHN evaluation networks have 8 cells and 16 channels
        flags=(); if [[ $dataset == cifar100 || $dataset == svhn ]]; then flags=(--layers 8 --init_channels 16); fi
        if [[ $space == darts ]]; then
          evaluate darts_pt "DARTS+PT (avg)*" "$dataset" "$run/projection_pt/genotype.json" "$run" "$run-eval" --seed "$s"
          evals+=("$run-eval")
        else
          evaluate darts_pt "DARTS+PT (Ours)" "$dataset" "$run/projection_pt/genotype.json" "$run" "$run-eval" \
            --seed "$s" "${flags[@]}"
        fi
      done
    done
  done
  if [[ -n $IMAGENET ]]; then  # App. A.8: the best DARTS-space cell in DARTS' mobile setting
    run=$(best_eval "${evals[@]}")
    evaluate darts_pt "DARTS+PT" imagenet "$(genotype_of "$run")" "${run%-eval}" "$out/imagenet" --data "$IMAGENET"
  fi
}

# ---------------------------------------------------------------- DARTS-PD (Sec. 4, Tables 1-2)
darts_pd() {
  local out=$OUT/darts_pd s run tiny=()
  # smoke: one epoch of stage 2 (a sliver of a pass), one generation of a few paths, costed on the tiny network
  if ((SMOKE)); then
    tiny=(--fair_epochs 1 --no-whole_passes --fair_batch_size 32 --generations 1 --population 4 --parents 2
      --mutations 2 --crossovers 2 --bn_batches 1 --eval_layers 3 --eval_init_channels 4)
  fi
  for s in $(seeds "0 1 2"); do  # Table 1 dagger: three runs
    run=$out/search-s$s
    stage "$run" genotype.json "$PYTHON" darts_pd/train_search.py "${SEARCH[@]}" --dataset "$(data cifar10)" \
      --seed "$s" "${tiny[@]}"
    evaluate darts_pd "DARTS-PD†(ours)" cifar10 "$run/genotype.json" "$run" "$out/eval-s$s" --seed "$s"
  done
  if [[ -n $IMAGENET ]]; then  # Table 2: all three stages on ImageNet
    stage "$out/imagenet" genotype.json launch darts_pd/train_search.py --dataset imagenet --data "$IMAGENET"
    evaluate darts_pd "DARTS-PD-A(ours)" imagenet "$out/imagenet/genotype.json" "$out/imagenet" \
      "$out/imagenet-eval" --data "$IMAGENET"
  fi
}

# ---------------------------------------------------------------- D-DARTS (Sec. 5, Tables 1-3)
d_darts() {
  local out=$OUT/d_darts config dataset flags s run parse row target evals_dd2=() evals_dd5=()
  for config in $(full "lf-cifar10 lt-cifar10 lt-cifar100" lf-cifar10); do
    dataset=${config#*-} flags=()
    if [[ $config == lf-* ]]; then flags=(--w_abl 0); fi  # L_F alone (DD-1, DD-2); L_T otherwise
    for s in $(seeds "0 1 2 3"); do  # "the best of 4 independent runs"
      run=$out/$config-s$s
      stage "$run" summary.json "$PYTHON" d_darts/train_search.py "${SEARCH[@]}" --dataset "$(data "$dataset")" \
        --seed "$s" "${flags[@]}"
      for parse in sparse edge; do
        case $config-$parse in  # Table 1's rows: loss, parsing, search dataset
          lf-cifar10-sparse) row=DD-1 ;; lf-cifar10-edge) row=DD-2 ;; lt-cifar10-sparse) row=DD-3 ;;
          lt-cifar100-edge) row=DD-4 ;; lt-cifar100-sparse) row=DD-5 ;; *) continue ;;
        esac
        for target in $(full "cifar10 cifar100" cifar10); do  # Table 1 (CIFAR-10) and Table 2 (CIFAR-100)
          evaluate d_darts "$row" "$target" "$run/genotype_$parse.json" "$run" "$run-$parse-$target" --seed "$s"
        done
        if [[ $row == DD-2 ]]; then evals_dd2+=("$run-$parse-cifar10"); fi
        if [[ $row == DD-5 ]]; then evals_dd5+=("$run-$parse-cifar100"); fi
      done
    done
  done
  if [[ -n $IMAGENET ]]; then  # Table 3: DD-2 and DD-5 in the mobile setting
    for row in DD-2 DD-5; do
      if [[ $row == DD-2 ]]; then run=$(best_eval "${evals_dd2[@]}"); else run=$(best_eval "${evals_dd5[@]}"); fi
      evaluate d_darts "$row" imagenet "$(genotype_of "$run")" "$(dirname "$(genotype_of "$run")")" \
        "$out/imagenet-$row" --data "$IMAGENET"
    done
  fi
}

for method in ${METHODS//,/ }; do
  case $method in
    msg_das | entrannas | darts_pt | darts_pd | d_darts) echo "== $method"; "$method" ;;
    *) echo "run_all.sh: unknown method '$method' (msg_das, entrannas, darts_pt, darts_pd, d_darts)" >&2; exit 2 ;;
  esac
done
"$PYTHON" -m reproduce.summary "$OUT"
