#!/usr/bin/env bash
# The main job: both stages on one dataset, then evaluation and a report.
#
#   scripts/run_pipeline.sh [--preset quick|full|gpu] [--dataset shapes] [--tokenizer vqgan_lg] [--out runs/pipeline]
#                           [--num-processes 1] [--num-prompts 200] [--sample-seeds 0,1,2]
#                           [--stop-after tokenizer|prior|all] [--dry-run]
#
# The same as `lgvq pipeline` (lgvq/mainjob/; `--help` says every option): quick (the default on
# shapes) runs every stage in about 15 minutes on 2 CPU cores, full the shapes configs as they are,
# gpu the full preset's models sized for one GPU.
# Extra config overrides per stage (space-separated key=value) come from the environment:
# TOKENIZER_OVERRIDES, PRIOR_OVERRIDES, HEAD_OVERRIDES (e.g. PRIOR_OVERRIDES="train.max_steps=500").
# Running it again skips finished stages and resumes an interrupted training stage.
set -euo pipefail
exec python -m lgvq pipeline "$@"
