#!/usr/bin/env bash
# Fine-tuning an OpenAI-format Whisper checkpoint on FSDD (real speech): no released weights
# can be downloaded here, so stage A trains a tiny model of Whisper's architecture from
# scratch on synthetic English digits (egs/digits/asr's data) and exports it as tiny.pt;
# stage B fine-tunes tiny.pt on FSDD's training speakers through model.init_from and exports
# finetuned.pt; both are decoded on the held-out speaker (theo, as egs/fsdd/asr) before and
# after, and checked to load and decode the same in openai-whisper.
#   ./run.sh [--fsdd-dir DIR] [--stage N] [--stop-stage N] [--tiny true] [--train-args "..."] ...
# Stages: 1 data (data/synth: espeak-ng digits; data/fsdd: FSDD, theo held out; training sets
# also packed into longer utterances, */train_packed, which the models train on), 3 validate,
# 4 tokenizer (Whisper's multilingual vocabulary), 5 stage A: train + export tiny.pt,
# 6 stage B: fine-tune from tiny.pt + export finetuned.pt, 7 decode, 8 WER -> exp/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh

stage=0
stop_stage=100
fsdd_dir=""          # a local copy (DIR/recordings/*.wav); empty: download in stage 0
test_speakers=theo
fsdd_train_per_speaker=300
fsdd_test_per_speaker=100
synth_train_voices=300
synth_train_per_voice=2
synth_pack_passes=3  # packed training utterances (local/pack_data_dir.py): passes over the utterances
fsdd_pack_passes=1
tiny=false           # a few utterances per set (smoke tests)
nj=2
pretrain_experiment=whisper_tiny_digits   # conf/experiment/ here
finetune_experiment=whisper_tiny_finetune
pretrain_tag=whisper_tiny_digits
finetune_tag=whisper_tiny_fsdd
num_avg=3
check_utts=8         # utterances on which openai-whisper must give our logits and transcripts
test_sets="fsdd/test fsdd/dev synth/test"
train_args=""        # both stages
pretrain_args=""
finetune_args=""
append_options="train_args pretrain_args finetune_args"
. parse_options.sh

log() { echo -e "$(date '+%F %T') (run.sh) $*"; }
if [ -z "$fsdd_dir" ]; then fsdd_dir=downloads/fsdd; fi
A=exp/$pretrain_tag
B=exp/$finetune_tag

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  if [ -d "$fsdd_dir/recordings" ]; then
    log "stage 0: using $fsdd_dir"
  else
    log "stage 0: download FSDD into $fsdd_dir"
    python "$MAIN_ROOT/egs/fsdd/asr/local/download.py" "$fsdd_dir"
  fi
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  log "stage 1: synthetic digits (egs/digits/asr's data prep) and FSDD ($test_speakers held out)"
  synth=(--train-voices "$synth_train_voices" --train-per-voice "$synth_train_per_voice")
  fsdd=(--train-per-speaker "$fsdd_train_per_speaker" --test-per-speaker "$fsdd_test_per_speaker")
  if [ "$tiny" = true ]; then
    synth=(--train-voices 8 --train-per-voice 2 --dev-voices 2 --test-per-voice 1)
    fsdd=(--train-per-speaker 4 --dev-per-speaker 1 --test-per-speaker 3)
  fi
  python "$MAIN_ROOT/egs/digits/asr/local/prepare_data.py" --out data/synth "${synth[@]}" --num-workers "$nj"
  # real speech only: no synthetic speakers added to FSDD's training set (--synth-voices 0)
  python "$MAIN_ROOT/egs/fsdd/asr/local/prepare_data.py" --fsdd-dir "$fsdd_dir" --out data/fsdd --test-speakers "$test_speakers" \
    "${fsdd[@]}" --synth-voices 0
  # 30-s windows cost the same whatever they hold: train on 1-8 utterances per window
  python local/pack_data_dir.py data/synth/train data/synth/train_packed --passes "$synth_pack_passes"
  python local/pack_data_dir.py data/fsdd/train data/fsdd/train_packed --passes "$fsdd_pack_passes"
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  log "stage 3: validate data dirs"
  for d in synth/train synth/train_packed synth/dev synth/test fsdd/train fsdd/train_packed fsdd/dev fsdd/test; do
    python -m speechlm.bin.validate_data_dir "data/$d" --audio --sample-rate 16000
  done
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  log "stage 4: Whisper's multilingual tokenizer (what an OpenAI checkpoint of 51865 tokens decodes with)"
  python -c "from speechlm.tokenizers.whisper import WhisperTokenizer; WhisperTokenizer().save('data/tokenizer')"
fi

# User + system CPU seconds in a file written by bash's `times` (its second line: this
# script's finished children). On a machine shared with other jobs CPU time says more about
# a training run's cost than wall time.
cpu_seconds() {
  awk 'NR == 2 { for (i = 1; i <= 2; i++) { split($i, t, "m"); s += t[1] * 60 + t[2] } printf "%.0f\n", s }' "$1"
}

# train TAG EXPERIMENT DATA [overrides]: exp/TAG (wall time in exp/TAG/train_seconds, CPU time
# in exp/TAG/train_cpu_seconds), then the average of the $num_avg best checkpoints
train() {
  local tag=$1 preset=$2 data=$3 start
  shift 3
  start=$(date +%s)
  mkdir -p "exp/$tag"
  times > "exp/$tag/times.start"  # in this shell: a $(...) subshell has no children yet
  python -m speechlm.bin.train --config-dir conf experiment="$preset" exp_dir="exp/$tag" \
    data.train_dir="data/$data/train_packed" data.valid_dir="data/$data/dev" tokenizer_dir=data/tokenizer "$@"
  times > "exp/$tag/times.end"
  echo $(( $(date +%s) - start )) > "exp/$tag/train_seconds"
  echo $(( $(cpu_seconds "exp/$tag/times.end") - $(cpu_seconds "exp/$tag/times.start") )) > "exp/$tag/train_cpu_seconds"
  rm -f "exp/$tag/times.start" "exp/$tag/times.end"
  log "exp/$tag: training took $(cat "exp/$tag/train_seconds") s ($(cat "exp/$tag/train_cpu_seconds") CPU seconds)"
  python -m speechlm.bin.average_checkpoints "exp/$tag" --num "$num_avg"
}

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  log "stage 5 (A): train $A from scratch on synthetic digits; export $A/tiny.pt"
  # shellcheck disable=SC2086
  train "$pretrain_tag" "$pretrain_experiment" synth $train_args $pretrain_args
  python local/export_openai.py "$A/model.avg.ckpt" "$A/tiny.pt" --check-data-dir data/fsdd/test --check "$check_utts"
fi

if [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ]; then
  log "stage 6 (B): fine-tune $A/tiny.pt on FSDD's training speakers ($B); export $B/finetuned.pt"
  # shellcheck disable=SC2086
  train "$finetune_tag" "$finetune_experiment" fsdd model.init_from="$A/tiny.pt" $train_args $finetune_args
  python local/export_openai.py "$B/model.avg.ckpt" "$B/finetuned.pt" --check-data-dir data/fsdd/test \
    --check "$check_utts"
fi

if [ "$stage" -le 7 ] && [ "$stop_stage" -ge 7 ]; then
  log "stage 7: decode with the OpenAI-format files, before (tiny.pt) and after (finetuned.pt)"
  for model in "$A/tiny.pt" "$B/finetuned.pt"; do
    for d in $test_sets; do
      # Whisper's greedy decoding, English, no timestamps; `decode` reads OpenAI checkpoints as they are
      python -m speechlm.bin.decode checkpoint="$model" data_dir="data/$d" search=whisper search.language=en \
        out_dir="$(dirname "$model")/decode_${d//\//_}"
    done
  done
fi

if [ "$stage" -le 8 ] && [ "$stop_stage" -ge 8 ]; then
  log "stage 8: WER -> exp/RESULTS.md"
  rm -f exp/RESULTS.md
  for pair in "before:$A/tiny.pt" "after:$B/finetuned.pt"; do
    name=${pair%%:*} model=${pair#*:}
    for d in $test_sets; do
      python -m speechlm.bin.score "$(dirname "$model")/decode_${d//\//_}" --results-md exp/RESULTS.md \
        --tag "$name ($model)" --dataset "$d"
    done
  done
  {
    echo
    echo "$(date '+%F'), $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc --all) CPU cores;" \
      "training (wall, CPU seconds): A $(cat "$A/train_seconds" 2>/dev/null || echo '?') s," \
      "$(cat "$A/train_cpu_seconds" 2>/dev/null || echo '?') CPU s; B $(cat "$B/train_seconds" 2>/dev/null || echo '?') s," \
      "$(cat "$B/train_cpu_seconds" 2>/dev/null || echo '?') CPU s"
  } >> exp/RESULTS.md
  cat exp/RESULTS.md
fi
