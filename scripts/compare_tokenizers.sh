#!/usr/bin/env bash
# The tokenizer comparison on shapes: the six tokenizers x 3 seeds through the whole pipeline,
# then one table (mean ± std over seeds) of reconstruction, codebook usage, alignment
# diagnostics, text-to-image faithfulness, captioning, VQA and training minutes.
#
#   scripts/compare_tokenizers.sh [--root runs/compare] [--seeds "0 1 2"] [--tokenizers "vqgan vqgan_lg ..."]
#                                 [--stop-after tokenizer|prior|all] [--num-prompts 200] [--jobs 1]
#                                 [--results DIR]
#
# Each run is scripts/run_pipeline.sh --out ROOT/TOKENIZER/seedN with train.seed=N for every stage,
# so rerunning skips what is done and resumes what was interrupted. TOKENIZER_OVERRIDES /
# PRIOR_OVERRIDES / HEAD_OVERRIDES pass through; --stop-after tokenizer compares the codebooks alone.
# --jobs N runs N pipelines at once, each pinned to its own 1/N of the CPU cores (and sharing the
# GPU, if there is one), with its output in ROOT/TOKENIZER/seedN/pipeline.log; each job takes the
# next run when it is free. A failed run does not stop the others: the table is written from the
# runs that finished and the script exits 1, naming the failed ones.
# --results DIR (e.g. results/study): each finished run's OUT/result.json is copied to
# DIR/TOKENIZER/seedN.json, a run whose file is there for the same settings (its plan_hash: the
# stages' commands and config files, lgvq.run_result.plan_hash) is skipped, and the table is made
# from DIR's files, so a study can be completed piece by piece on different machines.
set -euo pipefail
ROOT=runs/compare
SEEDS="0 1 2"
TOKENIZERS="vqgan vqgan_lg cvq cvq_lg vqct vqct_lg"
STOP_AFTER=all
NUM_PROMPTS=200
JOBS=1
RESULTS=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --root) ROOT="$2"; shift 2 ;;
    --seeds) SEEDS="$2"; shift 2 ;;
    --tokenizers) TOKENIZERS="$2"; shift 2 ;;
    --stop-after) STOP_AFTER="$2"; shift 2 ;;
    --num-prompts) NUM_PROMPTS="$2"; shift 2 ;;
    --jobs) JOBS="$2"; shift 2 ;;
    --results) RESULTS="$2"; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown option $1" >&2; exit 2 ;;
  esac
done
if ! [[ "$JOBS" =~ ^[1-9][0-9]*$ ]]; then
  echo "error: --jobs must be a whole number of at least 1 (got $JOBS)" >&2; exit 2
fi
here="$(cd "$(dirname "$0")" && pwd)"
RUNS=()  # "TOKENIZER SEED", in the order the jobs take them
for tok in $TOKENIZERS; do
  for seed in $SEEDS; do RUNS+=("$tok $seed"); done
done
read -r -a CPUS <<< "$(python -c "import os; print(*sorted(os.sched_getaffinity(0)))")"
SHARE=$(( ${#CPUS[@]} / JOBS ))
(( SHARE >= 1 )) || SHARE=1

run_one() {  # run_one TOKENIZER SEED [--dry-run] [PREFIX...]: one pipeline run, its seed in every stage
  local tok="$1" seed="$2" dry=(); shift 2
  [[ "${1:-}" == --dry-run ]] && dry=(--dry-run) && shift
  TOKENIZER_OVERRIDES="${TOKENIZER_OVERRIDES:-} train.seed=$seed" \
  PRIOR_OVERRIDES="${PRIOR_OVERRIDES:-} train.seed=$seed" \
  HEAD_OVERRIDES="${HEAD_OVERRIDES:-} train.seed=$seed" \
    "$@" "$here/run_pipeline.sh" --tokenizer "$tok" --out "$ROOT/$tok/seed$seed" --stop-after "$STOP_AFTER" \
    --num-prompts "$NUM_PROMPTS" "${dry[@]}"
}

kept_already() {  # kept_already TOKENIZER SEED: DIR holds this run's result for the same settings
  local tok="$1" seed="$2" file="$RESULTS/$1/seed$2.json" plan
  [[ -n "$RESULTS" && -f "$file" ]] || return 1
  plan=$(run_one "$tok" "$seed" --dry-run | python -m lgvq.run_result plan-hash "$ROOT/$tok/seed$seed")
  python -c 'import json, sys; sys.exit(json.load(open(sys.argv[1])).get("plan_hash") != sys.argv[2])' "$file" "$plan"
}

keep_result() {  # keep_result TOKENIZER SEED: copy the finished run's result.json into DIR
  [[ -n "$RESULTS" ]] || return 0
  mkdir -p "$RESULTS/$1"
  cp "$ROOT/$1/seed$2/result.json" "$RESULTS/$1/seed$2.json"
  echo "=== $1, seed $2: result kept in $RESULTS/$1/seed$2.json"
}

next_run() {  # the index of the next run no job has taken yet: a counter in a file, under a lock
  (
    flock 9
    local i
    i=$(< "$ROOT/.queue")
    echo $(( i + 1 )) > "$ROOT/.queue"
    echo "$i"
  ) 9> "$ROOT/.queue.lock"
}

job() {  # job K: takes the next run until none is left; with --jobs > 1 on its own share of the cores
  local k="$1" i tok seed out failed=0 prefix=() cpus
  if (( JOBS > 1 )); then
    cpus=$(IFS=,; echo "${CPUS[*]:$(( k * SHARE % ${#CPUS[@]} )):$SHARE}")
    prefix=(env "OMP_NUM_THREADS=$SHARE" "MKL_NUM_THREADS=$SHARE")
    command -v taskset > /dev/null && prefix+=(taskset -c "$cpus")
  fi
  while i=$(next_run) && (( i < ${#RUNS[@]} )); do
    read -r tok seed <<< "${RUNS[$i]}"
    out="$ROOT/$tok/seed$seed"
    if kept_already "$tok" "$seed"; then
      echo "=== $tok, seed $seed: in $RESULTS already with the same settings, skipped"
      continue
    fi
    mkdir -p "$out"
    if (( JOBS == 1 )); then
      echo "=== $tok, seed $seed"
      run_one "$tok" "$seed" && keep_result "$tok" "$seed" && continue
    else
      echo "=== $tok, seed $seed: started $(date +%H:%M:%S) on cores $cpus (log: $out/pipeline.log)"
      if run_one "$tok" "$seed" "${prefix[@]}" >> "$out/pipeline.log" 2>&1; then
        echo "=== $tok, seed $seed: finished $(date +%H:%M:%S)"
        keep_result "$tok" "$seed"
        continue
      fi
      tail -n 5 "$out/pipeline.log" >&2
    fi
    echo "=== $tok, seed $seed: FAILED (its stage logs: $out/logs/)" >&2
    failed=1
  done
  return "$failed"
}

failed=0
pids=()
mkdir -p "$ROOT"
echo 0 > "$ROOT/.queue"
for (( k = 0; k < JOBS && k < ${#RUNS[@]}; k++ )); do
  job "$k" & pids+=("$!")
done
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
TABLE_FROM="${RESULTS:-$ROOT}"  # with --results, the table of every kept result (earlier machines' too)
if (( failed )); then
  lgvq report --compare "$TABLE_FROM" || true  # the table of the runs that finished, if any did
  echo "error: some runs failed (above); the same command again resumes them and skips the finished ones" >&2
  exit 1
fi
lgvq report --compare "$TABLE_FROM"
