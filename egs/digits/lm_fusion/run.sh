#!/usr/bin/env bash
# Shallow fusion of a language model on a digits-grammar test set: an acoustic model trained
# briefly on random digit strings, a Transformer LM trained on grammar text only, the test
# set (held-out voices) spoken in the grammar; decoded without and with the LM.
#   ./run.sh [--stage N] [--stop-stage N] [--train-voices 300] [--lm-weights "0 0.2 0.4"]
#            [--experiment conformer_fast] [--asr-tag asr] [--asr-args "hydra overrides"]
#            [--lm-args "hydra overrides"] [--ctc-weight 0.5] [--beam-size 10]
# Stages, numbered as in the other recipes: 1 data (local/prepare_data.py), 3 validate +
# CMVN, 4 word tokenizer, 5 LM on grammar text (exp/lm), 6 acoustic model (exp/ASR_TAG),
# 7 decode test with each LM weight (0 = no LM), 8 score: exp/ASR_TAG/RESULTS.md.
# Another acoustic model with the same data and LM, e.g. a transducer (its modified beam
# search fuses the same LM; no CTC weight):
#   ./run.sh --stage 6 --experiment conformer_fast_transducer --asr-tag transducer --ctc-weight ""
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh

stage=1
stop_stage=100
train_voices=300
train_per_voice=2
dev_voices=30
test_per_voice=30
lm_lines=20000
nj=1
experiment=conformer_fast
asr_tag=asr
asr_args="trainer.max_epochs=10 data.max_seconds=20"
lm_args="trainer.max_epochs=4"
beam_size=10
ctc_weight=0.5
lm_weights="0 0.2 0.4 0.6 1.0"
. parse_options.sh

log() { echo -e "$(date '+%F %T') (run.sh) $*"; }
asr=exp/$asr_tag
lm=exp/lm

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  log "stage 1: data (random digit strings for the acoustic model; grammar strings for test and LM text)"
  python local/prepare_data.py --out data --train-voices "$train_voices" --train-per-voice "$train_per_voice" \
    --dev-voices "$dev_voices" --test-per-voice "$test_per_voice" --lm-lines "$lm_lines" --num-workers "$nj"
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  log "stage 3: validate data dirs, CMVN statistics"
  for d in train dev test; do
    python -m speechlm.bin.validate_data_dir "data/$d" --audio --sample-rate 16000
  done
  python -m speechlm.bin.compute_cmvn data/train data/cmvn.npz experiment="$experiment"
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  log "stage 4: word tokenizer"
  python -m speechlm.bin.train_tokenizer --data-dir data/train --type word --out data/tokenizer
fi

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  log "stage 5: Transformer LM on grammar text ($lm), the acoustic model's tokenizer"
  # shellcheck disable=SC2086
  python -m speechlm.bin.train --config-dir conf experiment=lm_digits exp_dir="$lm" \
    data.train_text=data/lm_train/text data.valid_text=data/lm_valid/text tokenizer_dir=data/tokenizer $lm_args
  python -m speechlm.bin.average_checkpoints "$lm" --num 1
fi

if [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ]; then
  log "stage 6: acoustic model $experiment ($asr), a deliberately small budget"
  # shellcheck disable=SC2086
  python -m speechlm.bin.train experiment="$experiment" exp_dir="$asr" data.train_dir=data/train \
    data.valid_dir=data/dev tokenizer_dir=data/tokenizer cmvn_stats=data/cmvn.npz $asr_args
  python -m speechlm.bin.average_checkpoints "$asr" --num 1
fi

if [ "$stage" -le 7 ] && [ "$stop_stage" -ge 7 ]; then
  log "stage 7: decode test with LM weights: $lm_weights"
  for w in $lm_weights; do
    opts="search.beam_size=$beam_size"
    [ -z "$ctc_weight" ] || opts="$opts search.ctc_weight=$ctc_weight"
    [ "$w" = 0 ] || opts="$opts search.lm_checkpoint=$lm/model.avg.ckpt search.lm_weight=$w"
    # shellcheck disable=SC2086
    python -m speechlm.bin.decode checkpoint="$asr/model.avg.ckpt" data_dir=data/test out_dir="$asr/decode_test_lm$w" $opts
  done
fi

if [ "$stage" -le 8 ] && [ "$stop_stage" -ge 8 ]; then
  log "stage 8: score"
  rm -f "$asr/RESULTS.md"
  for w in $lm_weights; do
    python -m speechlm.bin.score "$asr/decode_test_lm$w" --results-md "$asr/RESULTS.md" --tag "lm_weight_$w" \
      --dataset test
  done
  cat "$asr/RESULTS.md"
fi
