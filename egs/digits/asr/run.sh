#!/usr/bin/env bash
# Connected digits spoken by espeak-ng voices: data -> Conformer CTC/attention -> WER.
#   ./run.sh [--stage N] [--stop-stage N] [--experiment conformer_small] [--train-per-voice 60]
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh
. ./cmd.sh

stage=0
stop_stage=100
experiment=conformer_small  # conf/experiment/<name>.yaml (recipe overrides of ../../../conf)
train_per_voice=60
test_per_voice=50
speed_perturb=true
nj=2
beam_size=10
ctc_weight=0.3
train_args=""  # extra Hydra overrides for training, e.g. "trainer.max_epochs=30 encoder=e_branchformer"
. parse_options.sh  # ../../../tools, on PATH via path.sh

exp=exp/${experiment}
train_set=train
log() { echo -e "$(date '+%F %T') (${0##*/}) $*"; }

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  log "stage 0: download: nothing to fetch, the corpus is synthesised in stage 1"
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  log "stage 1: data preparation (espeak-ng digit strings; test voices held out)"
  python local/prepare_data.py --out data --train-per-voice "$train_per_voice" --test-per-voice "$test_per_voice" --num-workers "$nj"
fi

if [ "$speed_perturb" = true ]; then train_set=train_sp; fi
if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ] && [ "$speed_perturb" = true ]; then
  log "stage 2: speed perturbation 0.9/1.0/1.1"
  python -m speechlm.bin.perturb_speed data/train data/train_sp
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  log "stage 3: validate data dirs, global CMVN statistics"
  for d in "$train_set" dev test; do
    python -m speechlm.bin.validate_data_dir "data/$d" --audio --sample-rate 16000
  done
  python -m speechlm.bin.compute_cmvn "data/$train_set" data/cmvn.npz
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  log "stage 4: character tokenizer"
  python -m speechlm.bin.train_tokenizer --data-dir "data/$train_set" --type char --out data/tokenizer
fi

if [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ]; then
  log "stage 6: train ($exp)"
  # shellcheck disable=SC2086
  python -m speechlm.bin.train --config-dir conf experiment="$experiment" exp_dir="$exp" \
    data.train_dir="data/$train_set" data.valid_dir=data/dev tokenizer_dir=data/tokenizer \
    cmvn_stats=data/cmvn.npz $train_args
fi

if [ "$stage" -le 7 ] && [ "$stop_stage" -ge 7 ]; then
  log "stage 7: average the best checkpoints, decode"
  python -m speechlm.bin.average_checkpoints "$exp" --num 3
  for d in dev test; do
    python -m speechlm.bin.decode checkpoint="$exp/model.avg.ckpt" data_dir="data/$d" \
      out_dir="$exp/decode_${d}" beam_size="$beam_size" ctc_weight="$ctc_weight"
  done
fi

if [ "$stage" -le 8 ] && [ "$stop_stage" -ge 8 ]; then
  log "stage 8: score"
  for d in dev test; do
    python -m speechlm.bin.score "$exp/decode_${d}" --results-md RESULTS.md --tag "$experiment" --dataset "$d"
  done
  cat RESULTS.md
fi
