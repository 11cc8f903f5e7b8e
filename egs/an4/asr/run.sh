#!/usr/bin/env bash
# CMU AN4 (alphanumeric; ~50 min of training speech, 130 test utterances): the classic
# small recipe, as ESPnet's egs2/an4/asr1 (its Transformer config, BPE 30, dev = the first
# 100 training utterances). Stages 2-8 are ../../../tools/asr.sh (5 = the optional LM).
#   ./run.sh [--an4-dir DIR] [--stage N] [--stop-stage N] [--use-lm true]
#            [asr.sh options: --experiment NAME --train-args "..." ...]
# The preset trains with trainer=gpu; on a CPU: --train-args "trainer=cpu".
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh

stage=0
stop_stage=100
an4_dir=""  # the unpacked an4/ folder (etc/, wav/); empty: downloads/an4 (stage 0 fetches it)
ndev=100  # first N sorted training utterances -> dev (ESPnet's train_dev)
use_lm=false
skip_bad=false  # true: corpus problems are listed and left out instead of stopping stage 1
passthrough_unknown=true
. parse_options.sh

log() { echo -e "$(date '+%F %T') (run.sh) $*"; }
if [ -z "$an4_dir" ]; then an4_dir=downloads/an4; fi
if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  if [ -d "$an4_dir/etc" ]; then
    log "stage 0: using $an4_dir"
  else
    log "stage 0: download AN4 into $(dirname "$an4_dir")"
    python local/download.py "$(dirname "$an4_dir")"
  fi
fi
if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  log "stage 1: data dirs train (train_nodev), dev (first $ndev training utterances), test"
  python local/prepare_data.py --an4-dir "$an4_dir" --out data --ndev "$ndev" --skip-bad "$skip_bad"
fi
[ "$stop_stage" -ge 2 ] || exit 0  # data preparation only
# Recipe defaults first; options given to run.sh come later and win. ESPnet's an4 decodes
# with beam 10, ctc_weight 0.3, lm_weight 0.1 and averages the 10 best checkpoints.
asr.sh --stage "$((stage > 2 ? stage : 2))" --stop-stage "$stop_stage" \
  --experiment an4_transformer --token-type bpe --nbpe 30 --test-sets "dev test" \
  --beam-size 10 --ctc-weight 0.3 --num-avg 10 \
  --use-lm "$use_lm" --lm-experiment an4_lm_lstm --lm-train-text data/train/text --lm-weight 0.1 \
  "${passthrough[@]}"
