#!/usr/bin/env bash
# Stages 2-8 shared by the ASR recipes (as ESPnet's asr.sh): speed perturbation, validation
# + CMVN, tokenizer, language model (optional), training, averaging + decoding, scoring into
# exp/<experiment>/RESULTS.md.
# A recipe's run.sh prepares data/{train,dev,test} in stages 0-1 and then calls this:
#   asr.sh --stage N --stop-stage N --experiment NAME [--tag TAG] [--test-sets "dev test"]
#          [--train-args "hydra overrides"] [--decode-args "hydra overrides"]
# --train-args / --decode-args add to each other (a recipe's own and the user's both count;
# the later ones win on the same key). exp/TAG (TAG defaults to the experiment name) holds
# the run; e.g. a transducer run of the same preset:
#   --tag conformer_fast_transducer --train-args "model=transducer".
# --beam-size goes to any model's search; --ctc-weight (joint CTC/attention search only) is
# left to the search's default unless given.
# Stage 5 (optional, --use-lm true) trains a language model on text into exp/LM_TAG
# (--lm-experiment preset, --lm-args "hydra overrides"; --lm-train-text FILE, default the
# training transcripts data/train/text: the speed-perturbed copies would repeat each line
# three times) and averages it; stage 7 then decodes with shallow fusion (--lm-weight).
set -euo pipefail

stage=2
stop_stage=100
experiment=conformer_small
speed_perturb=true
token_type=char
nbpe=100
test_sets="dev test"
valid_set=dev
beam_size=10
ctc_weight=""
num_avg=3
train_args=""
decode_args=""
tag=""
use_lm=false
lm_experiment=lm_transformer
lm_train_text=""
lm_args=""
lm_weight=0.3
lm_tag=lm
append_options="train_args decode_args lm_args"
. parse_options.sh

[ -n "$tag" ] || tag=$experiment
exp=exp/${tag}
train_set=train
[ "$speed_perturb" = true ] && train_set=train_sp
log() { echo -e "$(date '+%F %T') (asr.sh) $*"; }

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ] && [ "$speed_perturb" = true ]; then
  log "stage 2: speed perturbation 0.9/1.0/1.1"
  python -m speechlm.bin.perturb_speed data/train data/train_sp
fi

config_dir=(); [ -d conf ] && config_dir=(--config-dir conf)  # the recipe's own presets, if any

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  log "stage 3: validate data dirs, global CMVN statistics (of the experiment's own frontend)"
  for d in "$train_set" $test_sets; do
    python -m speechlm.bin.validate_data_dir "data/$d" --audio --sample-rate 16000
  done
  # shellcheck disable=SC2086
  python -m speechlm.bin.compute_cmvn "data/$train_set" data/cmvn.npz "${config_dir[@]}" experiment="$experiment" \
    $train_args
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  log "stage 4: $token_type tokenizer"
  size=""; [ "$token_type" = bpe ] || [ "$token_type" = unigram ] && size="--vocab-size $nbpe"
  # shellcheck disable=SC2086
  python -m speechlm.bin.train_tokenizer --data-dir "data/$train_set" --type "$token_type" $size --out data/tokenizer
fi

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ] && [ "$use_lm" = true ]; then
  log "stage 5: language model $lm_experiment (exp/$lm_tag)"
  [ -n "$lm_train_text" ] || lm_train_text=data/train/text
  # shellcheck disable=SC2086
  python -m speechlm.bin.train "${config_dir[@]}" experiment="$lm_experiment" exp_dir="exp/$lm_tag" \
    data.train_text="$lm_train_text" data.valid_text="data/$valid_set/text" tokenizer_dir=data/tokenizer $lm_args
  python -m speechlm.bin.average_checkpoints "exp/$lm_tag" --num "$num_avg"
fi

if [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ]; then
  log "stage 6: train ($exp)"
  # shellcheck disable=SC2086
  python -m speechlm.bin.train "${config_dir[@]}" experiment="$experiment" exp_dir="$exp" \
    data.train_dir="data/$train_set" data.valid_dir="data/$valid_set" tokenizer_dir=data/tokenizer \
    cmvn_stats=data/cmvn.npz $train_args
fi

if [ "$stage" -le 7 ] && [ "$stop_stage" -ge 7 ]; then
  log "stage 7: average the $num_avg best checkpoints, decode"
  python -m speechlm.bin.average_checkpoints "$exp" --num "$num_avg"
  search_args="search.beam_size=$beam_size"
  [ -z "$ctc_weight" ] || search_args="$search_args search.ctc_weight=$ctc_weight"
  if [ "$use_lm" = true ]; then  # shallow fusion with stage 5's LM
    search_args="$search_args search.lm_checkpoint=exp/$lm_tag/model.avg.ckpt search.lm_weight=$lm_weight"
  fi
  for d in $test_sets; do
    # shellcheck disable=SC2086
    python -m speechlm.bin.decode checkpoint="$exp/model.avg.ckpt" data_dir="data/$d" \
      out_dir="$exp/decode_${d}" $search_args $decode_args
  done
fi

if [ "$stage" -le 8 ] && [ "$stop_stage" -ge 8 ]; then
  log "stage 8: score"
  for d in $test_sets; do
    python -m speechlm.bin.score "$exp/decode_${d}" --results-md "$exp/RESULTS.md" --tag "$tag" --dataset "$d"
  done
  # As ESPnet: the run's table goes to exp/<tag>/RESULTS.md; the recipe's RESULTS.md is
  # curated from those, with the command that produced each.
  cat "$exp/RESULTS.md"
fi
