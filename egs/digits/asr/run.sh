#!/usr/bin/env bash
# Connected digits spoken by espeak-ng voices, test voices held out:
# synthetic data -> Conformer CTC/attention -> WER. Stages 2-8 are ../../../tools/asr.sh.
#   ./run.sh [--stage N] [--stop-stage N] [--train-voices 300] [--train-per-voice 2]
#            [asr.sh options: --experiment NAME --token-type word --speed-perturb true ...]
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh

stage=0
stop_stage=100
train_voices=300
train_per_voice=2
dev_voices=60
test_per_voice=30
nj=2
passthrough_unknown=true
. parse_options.sh

log() { echo -e "$(date '+%F %T') (run.sh) $*"; }
if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  log "stage 0: download: nothing to fetch, the corpus is synthesised in stage 1"
fi
if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  log "stage 1: data preparation (espeak-ng digit strings; test voices held out)"
  python local/prepare_data.py --out data --train-voices "$train_voices" --train-per-voice "$train_per_voice" \
    --dev-voices "$dev_voices" --test-per-voice "$test_per_voice" --num-workers "$nj"
fi
# Recipe defaults first; options given to run.sh come later and win.
asr.sh --stage "$((stage > 2 ? stage : 2))" --stop-stage "$stop_stage" \
  --experiment conformer_fast_demo --token-type word "${passthrough[@]}"
