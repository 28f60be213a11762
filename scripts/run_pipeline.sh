#!/usr/bin/env bash
# The main job: both stages on one dataset, then evaluation and a report.
#
#   scripts/run_pipeline.sh [--preset quick|full] [--dataset shapes] [--tokenizer vqgan_lg] [--out runs/pipeline]
#                           [--num-processes 1] [--num-prompts 200] [--sample-seeds 0,1,2]
#                           [--stop-after tokenizer|prior|all] [--dry-run]
#
# --preset (shapes): quick (the default) runs every stage sized to about 15 minutes on 2 CPU cores
# (48 px images, short training: configs/presets/quick/ overlays the shapes configs); full runs
# the shapes configs as they are (64 px, the quality of docs/results.md: hours on 2 CPU cores).
# The paper presets (--dataset cub | celebahq | coco | textcaps) are full runs only.
# --dataset: shapes (built in) or a paper preset (configs/replicate/: 256 px, f = 16, the papers'
# settings; a GPU job), read from data/NAME or DATA_DIR after scripts/convert_dataset.py.
# --tokenizer: vqgan | vqgan_lg | vqct | vqct_lg | cvq | cvq_lg. --num-prompts / --sample-seeds:
# the prior's faithfulness is the mean over these sampling seeds, each over the first N validation
# captions. --stop-after: end (with the report) once the tokenizer, or the prior, is trained and
# evaluated. --dry-run: print each stage's command and run none.
# Extra config overrides per stage (space-separated key=value) come from the environment:
# TOKENIZER_OVERRIDES, PRIOR_OVERRIDES, HEAD_OVERRIDES (e.g. PRIOR_OVERRIDES="train.max_steps=500").
# Stages: tokenizer -> [encode the code store | evaluate the tokenizer (+ alignment)] -> [text-to-
# image prior, its evaluation | captioning head, VQA head, each evaluated] -> report.md /
# report.json / plots. Stages in [ | ] run side by side, each on half the CPU cores (SEQUENTIAL=1
# runs them one after another); every stage's output is in OUT/logs/NAME.log.
# Running it again skips finished stages (OUT/.stages/NAME.done) and resumes an interrupted
# training stage from its last checkpoint. Each stage's wall time and peak memory go to
# OUT/timings.json and OUT/peak_memory.json (scripts/run_stage.py), and into the report.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"

DATASET=shapes
PRESET=""
TOKENIZER=vqgan_lg
OUT=runs/pipeline
NPROC=1
NUM_PROMPTS=200
SAMPLE_SEEDS=0,1,2
STOP_AFTER=all
DRY_RUN=0
START=$(date +%s)
ARGS=("$@")
read -r -a TOKENIZER_EXTRA <<< "${TOKENIZER_OVERRIDES:-}"
read -r -a PRIOR_EXTRA <<< "${PRIOR_OVERRIDES:-}"
read -r -a HEAD_EXTRA <<< "${HEAD_OVERRIDES:-}"
usage() { sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --preset) PRESET="$2"; shift 2 ;;
    --dataset) DATASET="$2"; shift 2 ;;
    --tokenizer) TOKENIZER="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --num-processes) NPROC="$2"; shift 2 ;;
    --num-prompts) NUM_PROMPTS="$2"; shift 2 ;;
    --sample-seeds) SAMPLE_SEEDS="$2"; shift 2 ;;
    --stop-after) STOP_AFTER="$2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

case "$STOP_AFTER" in
  tokenizer|prior|all) ;;
  *) echo "error: --stop-after must be tokenizer, prior or all (got $STOP_AFTER)" >&2; exit 2 ;;
esac
case "$PRESET" in
  "") PRESET=quick; [[ "$DATASET" != shapes ]] && PRESET=full ;;
  quick) [[ "$DATASET" != shapes ]] && { echo "error: --preset quick is sized for the built-in shapes data; the paper presets (--dataset $DATASET) are full runs" >&2; exit 2; } ;;
  full) ;;
  *) echo "error: --preset must be quick or full (got $PRESET)" >&2; exit 2 ;;
esac
case "$TOKENIZER" in
  vqgan|vqgan_lg|vqct|vqct_lg|cvq|cvq_lg) ;;
  *) echo "error: --tokenizer must be one of vqgan, vqgan_lg, vqct, vqct_lg, cvq, cvq_lg (got $TOKENIZER)" >&2; exit 2 ;;
esac
# Per-dataset configs. Real presets use the papers' settings (configs/replicate/: 256 px, f = 16,
# batch 8) and need their data converted first; DATA_DIR overrides where it lives.
case "$DATASET" in
  shapes)
    TOKENIZER_CONFIGS=(--config configs/tokenizer/vqgan_shapes.yaml)
    CVQ_CONFIG=configs/tokenizer/cvq_shapes.yaml
    VQCT_CONFIG=configs/tokenizer/vqct_shapes.yaml
    VOCAB_ARGS=(--source encoder_vocab --max-words 128)  # shapes captions hold a dozen words
    LG_CONFIG=configs/lgvq/shapes.yaml
    ENCODE_ARGS=(--text-max-length 24)
    PRIOR_CONFIGS=(--config configs/prior/shapes_t2i.yaml)
    CAPTIONER_CONFIGS=(--config configs/heads/shapes_captioner.yaml)
    VQA_CONFIGS=(--config configs/heads/shapes_vqa.yaml)
    if [[ "$PRESET" == quick ]]; then  # overlays sized to about 15 minutes on 2 CPU cores
      QUICK=configs/presets/quick
      TOKENIZER_CONFIGS+=(--config "$QUICK/tokenizer.yaml")
      PRIOR_CONFIGS+=(--config "$QUICK/prior.yaml")
      CAPTIONER_CONFIGS+=(--config "$QUICK/captioner.yaml")
      VQA_CONFIGS+=(--config "$QUICK/vqa.yaml")
    fi
    ;;
  cub|celebahq|coco|textcaps)
    DATA_DIR="${DATA_DIR:-data/$DATASET}"
    if [[ ! -f "$DATA_DIR/train/metadata.jsonl" ]]; then
      declare -A CONVERT=(
        [cub]="python scripts/convert_dataset.py cub --cub CUB_200_2011 --captions cvpr2016_cub --out $DATA_DIR"
        [celebahq]="python scripts/convert_dataset.py celebahq --images CelebA-HQ-img --captions celeba-caption --test-list test/filenames.pickle --out $DATA_DIR"
        [coco]="python scripts/convert_dataset.py coco --coco COCO_ROOT --out $DATA_DIR"
        [textcaps]="python scripts/convert_dataset.py textcaps --textcaps TEXTCAPS_ROOT --out $DATA_DIR")
      echo "error: --dataset $DATASET needs its images and captions in $DATA_DIR (train/ and validation/ with" >&2
      echo "       metadata.jsonl), and $DATA_DIR/train/metadata.jsonl does not exist. Download the raw release" >&2
      echo "       (README: Replicating the papers on real data), then convert it:" >&2
      echo "         ${CONVERT[$DATASET]}" >&2
      echo "       or point DATA_DIR at an existing converted folder." >&2
      exit 2
    fi
    TOKENIZER_CONFIGS=(--config configs/replicate/vqgan_f16.yaml --config "configs/replicate/$DATASET.yaml")
    TOKENIZER_EXTRA=("data.path=$DATA_DIR" "${TOKENIZER_EXTRA[@]}")
    CVQ_CONFIG=configs/replicate/cvq.yaml
    VQCT_CONFIG=configs/replicate/vqct.yaml
    VOCAB_ARGS=(--source captions --data "$DATA_DIR")  # the paper's mining
    LG_CONFIG="configs/lgvq/$DATASET.yaml"
    [[ "$DATASET" == coco ]] && LG_CONFIG=configs/lgvq/textcaps.yaml  # no official COCO weights
    ENCODE_ARGS=()
    PRIOR_CONFIGS=(--config configs/replicate/prior_t2i.yaml)
    CAPTIONER_CONFIGS=()
    [[ "$DATASET" == cub ]] && CAPTIONER_CONFIGS=(--config configs/heads/cub_captioner.yaml)  # the paper's Table 11
    VQA_CONFIGS=()  # COCO-QA is its own dataset: see configs/heads/cocoqa_vqa.yaml
    ;;
  *) echo "error: --dataset must be one of shapes, cub, celebahq, coco, textcaps (got $DATASET)" >&2; exit 2 ;;
esac

if [[ "$NPROC" -gt 1 ]]; then
  LGVQ=(accelerate launch --multi_gpu --num_processes "$NPROC" -m lgvq)
else
  LGVQ=(lgvq)
fi

[[ "$TOKENIZER" == cvq* ]] && TOKENIZER_CONFIGS+=(--config "$CVQ_CONFIG")
[[ "$TOKENIZER" == vqct* ]] && TOKENIZER_CONFIGS+=(--config "$VQCT_CONFIG") \
  && TOKENIZER_EXTRA+=("model.quantizer.vqct.vocab=$OUT/vocab")
# VQCT stores hold several tokens per grid cell, which the quick prior's 2 x 2 blocks cannot group
[[ "$TOKENIZER" == vqct* && "$PRESET" == quick ]] && PRIOR_EXTRA=("model.group_size=1" "${PRIOR_EXTRA[@]}")
[[ "$TOKENIZER" == *_lg ]] && TOKENIZER_CONFIGS+=(--config "$LG_CONFIG")

if [[ "$DRY_RUN" != 1 ]]; then
mkdir -p "$OUT/.stages" "$OUT/logs"
# what this run is, for the report's "what was run"
PLAN_HASH=$("$HERE/run_pipeline.sh" "${ARGS[@]}" --dry-run | python -m lgvq.run_result plan-hash "$OUT")
python - "$OUT/pipeline.json" "$PRESET" "$DATASET" "$TOKENIZER" "$NUM_PROMPTS" "$SAMPLE_SEEDS" "$PLAN_HASH" \
  "${TOKENIZER_OVERRIDES:-}" "${PRIOR_OVERRIDES:-}" "${HEAD_OVERRIDES:-}" <<'EOF'
import json, sys
out, preset, dataset, tokenizer, prompts, seeds, plan, *overrides = sys.argv[1:]
from lgvq.cpu import cpu_description
json.dump({"preset": preset, "dataset": dataset, "tokenizer": tokenizer, "num_prompts": int(prompts),
           "sample_seeds": seeds, "overrides": dict(zip(("tokenizer", "prior", "heads"), overrides)),
           "plan_hash": plan, "cpu": cpu_description()}, open(out, "w"), indent=2)
EOF
fi
stage() {  # stage NAME COMMAND...: run once, record its wall time and peak memory, log to OUT/logs/NAME.log
  local name="$1"; shift
  if [[ "$DRY_RUN" == 1 ]]; then
    echo "== $name: $*"
    return
  fi
  if [[ -f "$OUT/.stages/$name.done" ]]; then
    echo "== $name: done already, skipped"
    return
  fi
  echo "== $name: started $(date +%H:%M:%S) (log: $OUT/logs/$name.log)"
  # (status checked by hand: `set -e` does not apply inside a function called as `fn || ...`)
  local status=0
  if [[ -n "${LANE_QUIET:-}" ]]; then
    python "$HERE/run_stage.py" "$OUT" "$name" "$@" > "$OUT/logs/$name.log" 2>&1 || status=$?
  else
    python "$HERE/run_stage.py" "$OUT" "$name" "$@" 2>&1 | tee "$OUT/logs/$name.log" || status=$?
  fi
  if [[ "$status" -ne 0 ]]; then
    echo "== $name: FAILED (exit $status); the end of $OUT/logs/$name.log:" >&2
    tail -n 20 "$OUT/logs/$name.log" >&2
    return "$status"
  fi
  touch "$OUT/.stages/$name.done"
  echo "== $name: finished $(date +%H:%M:%S)"
}

# Two lanes of stages side by side when they do not depend on each other, each process on half
# the CPU cores (two torch processes with default threads on the same cores slow each other down
# many times over). The first lane shows its progress; the second writes only to its logs.
CORES=$(python -c "import os; print(len(os.sched_getaffinity(0)))")
side_by_side() {  # side_by_side "FUNCTION..." "FUNCTION...": run two lanes of stage functions
  local first="$1" second="$2" status=0
  if [[ "$NPROC" -gt 1 || "$CORES" -lt 2 || "${SEQUENTIAL:-0}" == 1 || "$DRY_RUN" == 1 ]]; then
    for fn in $first $second; do "$fn"; done
    return
  fi
  local threads=$(( CORES / 2 ))
  ( export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads LANE_QUIET=1
    for fn in $second; do "$fn" || exit 1; done ) &
  local pid=$!
  ( export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads
    for fn in $first; do "$fn" || exit 1; done ) || status=$?
  wait "$pid" || status=$?
  return "$status"
}

vocab() { stage vocab lgvq build-vocab "${VOCAB_ARGS[@]}" --out "$OUT/vocab"; }
tokenizer() {
  stage tokenizer "${LGVQ[@]}" train-tokenizer "${TOKENIZER_CONFIGS[@]}" --resume latest \
    train.output_dir="$OUT/tokenizer" lgvq.text_cache_dir="$OUT/text_cache" "${TOKENIZER_EXTRA[@]}"
}
evaluate_tokenizer() { stage evaluate-tokenizer lgvq evaluate-tokenizer --model "$OUT/tokenizer/model" --no-fid; }
evaluate_alignment() {
  if [[ "$TOKENIZER" == *_lg ]]; then
    stage evaluate-alignment lgvq evaluate-alignment --model "$OUT/tokenizer/model"
  fi
}
encode() {
  stage encode lgvq encode --tokenizer "$OUT/tokenizer/model" --out "$OUT/codes" "${ENCODE_ARGS[@]}" \
    --text-cache-dir "$OUT/text_cache"
}
prior() {
  stage prior "${LGVQ[@]}" train-prior "${PRIOR_CONFIGS[@]}" --resume latest \
    store="$OUT/codes" train.output_dir="$OUT/prior" "${PRIOR_EXTRA[@]}"
}
evaluate_prior() {
  stage evaluate-prior lgvq evaluate-prior --prior "$OUT/prior" --num-prompts "$NUM_PROMPTS" --seeds "$SAMPLE_SEEDS"
}
captioner() {
  if [[ ${#CAPTIONER_CONFIGS[@]} -gt 0 ]]; then
    stage captioner "${LGVQ[@]}" train-captioner "${CAPTIONER_CONFIGS[@]}" --resume latest \
      store="$OUT/codes" train.output_dir="$OUT/captioner" "${HEAD_EXTRA[@]}"
    stage evaluate-captioner lgvq evaluate-head --model "$OUT/captioner" --limit "$NUM_PROMPTS"
  fi
}
vqa() {
  if [[ ${#VQA_CONFIGS[@]} -gt 0 ]]; then
    stage vqa "${LGVQ[@]}" train-vqa "${VQA_CONFIGS[@]}" --resume latest \
      store="$OUT/codes" train.output_dir="$OUT/vqa" "${HEAD_EXTRA[@]}"
    stage evaluate-vqa lgvq evaluate-head --model "$OUT/vqa"
  fi
}

record_wall() {  # add this invocation's wall time to OUT/wall.json (once; also when a stage failed)
  [[ "$DRY_RUN" == 1 || -n "${WALL_RECORDED:-}" || ! -d "$OUT/.stages" ]] && return
  WALL_RECORDED=1
  python - "$OUT/wall.json" "$(( $(date +%s) - START ))" <<'EOF'
import json, os, sys
path, seconds = sys.argv[1], int(sys.argv[2])
runs = json.load(open(path)) if os.path.isfile(path) else []
json.dump(runs + [seconds], open(path, "w"))
EOF
}
trap record_wall EXIT
finish() {  # the report, then exit
  [[ "$DRY_RUN" == 1 ]] && exit 0
  record_wall
  lgvq report --run "$OUT"
  exit 0
}

[[ "$TOKENIZER" == vqct* ]] && vocab
tokenizer
if [[ "$STOP_AFTER" == tokenizer ]]; then
  side_by_side "evaluate_tokenizer" "evaluate_alignment"
  finish
fi
side_by_side "encode" "evaluate_tokenizer evaluate_alignment"
if [[ "$STOP_AFTER" == prior ]]; then
  prior; evaluate_prior
  finish
fi
side_by_side "prior evaluate_prior" "captioner vqa"
finish
