#!/usr/bin/env bash
# Serialized output training (SOT) on two-talker connected digits: espeak-ng digit strings of
# two speakers, partly overlapped, transcribed first-in-first-out with a speaker-change token
# by one Whisper-style multitask model, against single-talker models of the same voices;
# all scored with cpWER on the test mixtures and on the test mixtures' sources alone.
#   ./run.sh [--stage N] [--stop-stage N] [--train-mixtures 1500] [--tiny true]
#            [--train-args "hydra overrides, every model"] ...   (--help lists them all)
# Stages: 1 data (mixtures data/{train,dev,test} and their sources alone data/*_single),
# 3 validate + CMVN, 4 tokenizers, 6 train: exp/sot (SOT on the mixtures), exp/single (the
# same model and preset trained on the sources alone) and, with --asr-baseline true,
# exp/single_ctc_attention (egs/digits/asr's conformer_fast CTC/attention model, word tokens,
# on the sources alone), 7 average + decode test and test_single, 8 cpWER -> exp/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh

stage=0
stop_stage=100
train_mixtures=1500
dev_mixtures=100
test_mixtures=200
tiny=false           # a few mixtures per set (smoke tests)
nj=2
experiment=sot_conformer_fast  # conf/experiment/ here: the SOT model and the single-talker one
asr_baseline=true    # also train the CTC/attention ASR model (conformer_fast) on the sources
asr_experiment=conformer_fast
nbpe=40              # bpe pieces (the ten digit words each get one)
num_avg=3
beam_size=""         # empty: greedy (Whisper's temperature-0 decoding) for the multitask models
asr_beam_size=10
test_sets="test test_single"
train_args=""        # every model
sot_args=""          # the SOT model only
single_args=""       # the multitask single-talker model only
asr_args=""          # the CTC/attention model only
append_options="train_args sot_args single_args asr_args"
. parse_options.sh

log() { echo -e "$(date '+%F %T') (run.sh) $*"; }
models="sot single"
[ "$asr_baseline" = true ] && models="$models single_ctc_attention"

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  log "stage 0: download: nothing to fetch, the corpus is synthesised in stage 1"
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  log "stage 1: two-talker mixtures and their sources (test voices held out)"
  size_args=(--train-mixtures "$train_mixtures" --dev-mixtures "$dev_mixtures" --test-mixtures "$test_mixtures")
  [ "$tiny" = true ] && size_args=(--tiny)
  python local/prepare_data.py --out data "${size_args[@]}" --sources --num-workers "$nj"
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  log "stage 3: validate data dirs; global CMVN statistics of each model's training data"
  for d in train dev test train_single dev_single test_single; do
    python -m speechlm.bin.validate_data_dir "data/$d" --audio --sample-rate 16000
  done
  # shellcheck disable=SC2086
  python -m speechlm.bin.compute_cmvn data/train data/cmvn.npz --config-dir conf experiment="$experiment" $train_args
  # shellcheck disable=SC2086
  python -m speechlm.bin.compute_cmvn data/train_single data/cmvn_single.npz --config-dir conf \
    experiment="$experiment" $train_args
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  log "stage 4: bpe tokenizer with Whisper's special tokens (<|en|>, <|sc|>, ...); word tokenizer"
  # the transcripts without their speaker-change marks: <sc> is a special token, not text
  mkdir -p data/tokenizer_text
  sed 's/ <sc> / /g' data/train/text > data/tokenizer_text/text
  python -m speechlm.bin.train_tokenizer --text data/tokenizer_text/text --type bpe --vocab-size "$nbpe" \
    --no-hard-vocab-limit --multitask-languages en --out data/tokenizer
  if [ "$asr_baseline" = true ]; then
    python -m speechlm.bin.train_tokenizer --data-dir data/train_single --type word --out data/tokenizer_word
  fi
fi

# User + system CPU seconds in a file written by bash's `times` (its second line: this
# script's finished children). On a machine shared with other jobs CPU time says more about
# a training run's cost than wall time.
cpu_seconds() {
  awk 'NR == 2 { for (i = 1; i <= 2; i++) { split($i, t, "m"); s += t[1] * 60 + t[2] } printf "%.0f\n", s }' "$1"
}

# train TAG TRAIN_DIR VALID_DIR TOKENIZER CMVN EXPERIMENT [overrides]: exp/TAG, its wall time in
# exp/TAG/train_seconds, its CPU time in exp/TAG/train_cpu_seconds
train() {
  local tag=$1 train_dir=$2 valid_dir=$3 tokenizer=$4 cmvn=$5 preset=$6
  shift 6
  log "train exp/$tag ($preset on $train_dir)"
  local start
  start=$(date +%s)
  mkdir -p "exp/$tag"
  times > "exp/$tag/times.start"  # in this shell: a $(...) subshell has no children yet
  python -m speechlm.bin.train --config-dir conf experiment="$preset" exp_dir="exp/$tag" \
    data.train_dir="$train_dir" data.valid_dir="$valid_dir" tokenizer_dir="$tokenizer" cmvn_stats="$cmvn" "$@"
  times > "exp/$tag/times.end"
  echo $(( $(date +%s) - start )) > "exp/$tag/train_seconds"
  echo $(( $(cpu_seconds "exp/$tag/times.end") - $(cpu_seconds "exp/$tag/times.start") )) > "exp/$tag/train_cpu_seconds"
  rm -f "exp/$tag/times.start" "exp/$tag/times.end"
  log "exp/$tag: training took $(cat "exp/$tag/train_seconds") s ($(cat "exp/$tag/train_cpu_seconds") CPU seconds)"
}

if [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ]; then
  log "stage 6: train"
  # shellcheck disable=SC2086
  train sot data/train data/dev data/tokenizer data/cmvn.npz "$experiment" $train_args $sot_args
  # shellcheck disable=SC2086
  train single data/train_single data/dev_single data/tokenizer data/cmvn_single.npz "$experiment" \
    $train_args $single_args
  if [ "$asr_baseline" = true ]; then
    # shellcheck disable=SC2086
    train single_ctc_attention data/train_single data/dev_single data/tokenizer_word data/cmvn_single.npz \
      "$asr_experiment" $train_args $asr_args
  fi
fi

if [ "$stage" -le 7 ] && [ "$stop_stage" -ge 7 ]; then
  log "stage 7: average the $num_avg best checkpoints of each model; decode $test_sets"
  for tag in $models; do
    python -m speechlm.bin.average_checkpoints "exp/$tag" --num "$num_avg"
    search_args=(search=whisper search.language=en)
    [ -z "$beam_size" ] || search_args+=(search.beam_size="$beam_size")
    [ "$tag" = single_ctc_attention ] && search_args=(search.beam_size="$asr_beam_size")
    for d in $test_sets; do
      python -m speechlm.bin.decode checkpoint="exp/$tag/model.avg.ckpt" data_dir="data/$d" \
        out_dir="exp/$tag/decode_$d" "${search_args[@]}"
    done
  done
fi

if [ "$stage" -le 8 ] && [ "$stop_stage" -ge 8 ]; then
  log "stage 8: cpWER (speakers split at <sc>) -> exp/RESULTS.md"
  rm -f exp/RESULTS.md
  for tag in $models; do
    for d in $test_sets; do
      python -m speechlm.bin.score "exp/$tag/decode_$d" --sot --results-md exp/RESULTS.md --tag "$tag" --dataset "$d"
    done
  done
  {
    echo
    echo "$(date '+%F'), $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc --all) CPU cores; training (wall, CPU seconds):"
    echo
    for tag in $models; do
      echo "    $tag $(cat "exp/$tag/train_seconds" 2>/dev/null || echo '?') s, $(cat "exp/$tag/train_cpu_seconds" 2>/dev/null || echo '?') CPU s"
    done
  } >> exp/RESULTS.md
  # As ESPnet: the run's tables go to exp/RESULTS.md; the recipe's RESULTS.md is curated
  # from them, with the commands that produced each.
  cat exp/RESULTS.md
fi
