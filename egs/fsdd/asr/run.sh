#!/usr/bin/env bash
# Real speech: the Free Spoken Digit Dataset (CC BY-SA 4.0, Zohar Jackson and contributors),
# isolated digits concatenated into connected-digit utterances; WER on a held-out speaker.
# Stages 2-8 are ../../../tools/asr.sh.
#   ./run.sh [--fsdd-dir DIR] [--test-speakers theo] [--stage N] [asr.sh options]
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh

stage=0
stop_stage=100
fsdd_dir=""  # a local copy (DIR/recordings/*.wav); empty: download in stage 0
test_speakers=theo
train_per_speaker=300
test_per_speaker=100
synth_voices=300  # espeak-ng speakers added to train (see local/prepare_data.py); 0: none
synth_per_voice=2
level_dbfs=-25  # every recording's RMS level (local/prepare_data.py); none: as recorded
train_level_jitter=10  # training utterances get a random gain within +- this many dB
passthrough_unknown=true
. parse_options.sh

log() { echo -e "$(date '+%F %T') (run.sh) $*"; }
if [ -z "$fsdd_dir" ]; then fsdd_dir=downloads/fsdd; fi
if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  if [ -d "$fsdd_dir/recordings" ]; then
    log "stage 0: using $fsdd_dir"
  else
    log "stage 0: download FSDD into $fsdd_dir"
    python local/download.py "$fsdd_dir"
  fi
fi
if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  log "stage 1: connected digits from $fsdd_dir (test speakers: $test_speakers)"
  python local/prepare_data.py --fsdd-dir "$fsdd_dir" --out data --test-speakers "$test_speakers" \
    --train-per-speaker "$train_per_speaker" --test-per-speaker "$test_per_speaker" \
    --synth-voices "$synth_voices" --synth-per-voice "$synth_per_voice" --level-dbfs "$level_dbfs" \
    --train-level-jitter "$train_level_jitter"
fi
# Recipe defaults first; options given to run.sh come later and win.
asr.sh --stage "$((stage > 2 ? stage : 2))" --stop-stage "$stop_stage" \
  --experiment conformer_fast --token-type word --train-args "trainer.max_epochs=14" "${passthrough[@]}"
