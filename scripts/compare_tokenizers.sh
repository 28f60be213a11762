#!/usr/bin/env bash
# The tokenizer comparison on shapes: the six tokenizers x 3 seeds through the whole pipeline,
# then one table (mean ± std over seeds) of reconstruction, codebook usage, alignment
# diagnostics, text-to-image faithfulness, captioning and VQA.
#
#   scripts/compare_tokenizers.sh [--root runs/compare] [--seeds "0 1 2"] [--tokenizers "vqgan vqgan_lg ..."]
#                                 [--stop-after tokenizer|prior|all] [--num-prompts 200]
#
# Each run is scripts/run_pipeline.sh --out ROOT/TOKENIZER/seedN with train.seed=N for every stage,
# so rerunning skips what is done. TOKENIZER_OVERRIDES / PRIOR_OVERRIDES / HEAD_OVERRIDES pass through;
# --stop-after tokenizer compares the codebooks alone.
set -euo pipefail
ROOT=runs/compare
SEEDS="0 1 2"
TOKENIZERS="vqgan vqgan_lg cvq cvq_lg vqct vqct_lg"
STOP_AFTER=all
NUM_PROMPTS=200
while [[ $# -gt 0 ]]; do
  case "$1" in
    --root) ROOT="$2"; shift 2 ;;
    --seeds) SEEDS="$2"; shift 2 ;;
    --tokenizers) TOKENIZERS="$2"; shift 2 ;;
    --stop-after) STOP_AFTER="$2"; shift 2 ;;
    --num-prompts) NUM_PROMPTS="$2"; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown option $1" >&2; exit 2 ;;
  esac
done
here="$(cd "$(dirname "$0")" && pwd)"
for tok in $TOKENIZERS; do
  for seed in $SEEDS; do
    echo "=== $tok, seed $seed"
    TOKENIZER_OVERRIDES="${TOKENIZER_OVERRIDES:-} train.seed=$seed" \
    PRIOR_OVERRIDES="${PRIOR_OVERRIDES:-} train.seed=$seed" \
    HEAD_OVERRIDES="${HEAD_OVERRIDES:-} train.seed=$seed" \
      "$here/run_pipeline.sh" --tokenizer "$tok" --out "$ROOT/$tok/seed$seed" --stop-after "$STOP_AFTER" \
      --num-prompts "$NUM_PROMPTS"
  done
done
lgvq report --compare "$ROOT"
