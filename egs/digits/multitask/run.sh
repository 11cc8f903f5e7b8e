#!/usr/bin/env bash
# Whisper-style multitask model on connected digits in five languages (en, de, fr, es, it),
# spoken by espeak-ng voices, test voices held out: one encoder-decoder that identifies the
# language, transcribes (with or without word timestamps) and translates into English.
#   ./run.sh [--stage N] [--stop-stage N] [--experiment conformer_multitask] [--tag TAG]
#            [--train-args "hydra overrides"] [--tiny true] ...   (--help lists them all)
# Stages: 1 data (+ word_times from the synthesis' ctm), 3 validate + CMVN, 4 multitask
# tokenizer, 6 train, 7 average + evaluate (language ID, per-language WER, translation WER,
# timestamp error), 8 exp/<tag>/RESULTS.md. No speed perturbation (stage 2): it would move
# the words away from their times; stage 1 makes more voices instead.
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh

stage=0
stop_stage=100
languages=en,de,fr,es,it
train_speakers=100   # per language
train_per_speaker=6
dev_speakers=20      # per language, held-in, 1 utterance each
test_per_voice=10    # 4 held-out voices per language
tiny=false           # a few utterances per language (smoke tests)
nj=2                 # data preparation processes
threads=1            # torch threads of training and decoding (OMP_NUM_THREADS); see below
experiment=conformer_multitask  # conf/experiment/ here or in the repository's conf/
tag=""
token_type=bpe
nbpe=150             # one piece per digit word in the five languages
test_sets="dev test"
num_avg=3
beam_size=""         # empty: greedy (Whisper's temperature-0 decoding)
sample_len=""        # empty: half the decoder's context
ctc_weight=0.3       # > 0: also OWSM's joint CTC/attention transcript (models with a CTC head)
joint_beam_size=5
train_args=""
append_options="train_args"
. parse_options.sh

# One thread: on a 2-core machine shared with other jobs, a 2-thread torch process stalls at
# every OpenMP barrier whose other thread is descheduled (a training step measured 0.5 s with
# one thread, 4-8 s with two); alone on the machine, two threads gain little at this size.
[ -z "$threads" ] || export OMP_NUM_THREADS=$threads
[ -n "$tag" ] || tag=$experiment
exp=exp/${tag}
log() { echo -e "$(date '+%F %T') (run.sh) $*"; }
# cpu_seconds=CPU seconds (user + system) of this script's finished child processes so far
# (`times` run in this shell: a pipe or $(...) would run it in a fresh subshell)
child_cpu() {
  times > "$tmp_times"
  cpu_seconds=$(awk 'NR == 2 { s = 0; for (i = 1; i <= 2; i++) { split($i, t, /[ms]/); s += 60 * t[1] + t[2] }; print int(s) }' "$tmp_times")
}
tmp_times=$(mktemp); trap 'rm -f "$tmp_times"' EXIT

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  log "stage 0: download: nothing to fetch, the corpus is synthesised in stage 1"
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  log "stage 1: data preparation (espeak-ng digit strings in $languages; test voices held out)"
  size_args=(--train-speakers "$train_speakers" --train-per-speaker "$train_per_speaker"
             --dev-speakers "$dev_speakers" --test-per-voice "$test_per_voice")
  [ "$tiny" = true ] && size_args=(--tiny)
  python local/prepare_data.py --out data --languages "$languages" "${size_args[@]}" --num-workers "$nj"
  python local/ctm_to_word_times.py data/train data/dev data/test
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  log "stage 3: validate data dirs, global CMVN statistics (of the experiment's own frontend)"
  for d in train dev test; do
    python -m speechlm.bin.validate_data_dir "data/$d" --audio --sample-rate 16000
  done
  # shellcheck disable=SC2086
  python -m speechlm.bin.compute_cmvn data/train data/cmvn.npz --config-dir conf experiment="$experiment" $train_args
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  log "stage 4: $token_type tokenizer (<= $nbpe pieces) with Whisper's special tokens for $languages"
  # the transcripts and their English translations (the translate task's targets)
  mkdir -p data/tokenizer_text
  { cat data/train/text; sed 's/^\([^ ]*\)/\1-en/' data/train/text.en; } | LC_ALL=C sort > data/tokenizer_text/text
  python -m speechlm.bin.train_tokenizer --text data/tokenizer_text/text --type "$token_type" --vocab-size "$nbpe" \
    --no-hard-vocab-limit --multitask-languages "$languages" --out data/tokenizer
fi

if [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ]; then
  log "stage 6: train ($exp)"
  start=$(date +%s); child_cpu; cpu=$cpu_seconds
  # shellcheck disable=SC2086
  python -m speechlm.bin.train --config-dir conf experiment="$experiment" exp_dir="$exp" \
    data.train_dir=data/train data.valid_dir=data/dev tokenizer_dir=data/tokenizer cmvn_stats=data/cmvn.npz \
    $train_args
  child_cpu; echo "$(( $(date +%s) - start )) $(( cpu_seconds - cpu ))" > "$exp/train_seconds"  # wall, CPU
  log "training took $(cut -d' ' -f1 "$exp/train_seconds") s ($(cut -d' ' -f2 "$exp/train_seconds") CPU seconds)"
fi

if [ "$stage" -le 7 ] && [ "$stop_stage" -ge 7 ]; then
  log "stage 7: average the $num_avg best checkpoints; decode (language detected) and evaluate"
  python -m speechlm.bin.average_checkpoints "$exp" --num "$num_avg"
  search_args=()
  [ -z "$beam_size" ] || search_args+=(--beam-size "$beam_size")
  [ -z "$sample_len" ] || search_args+=(--sample-len "$sample_len")
  search_args+=(--ctc-weight "$ctc_weight" --joint-beam-size "$joint_beam_size")
  for d in $test_sets; do
    python local/evaluate.py "$exp/model.avg.ckpt" "data/$d" --out "$exp/decode_$d" "${search_args[@]}"
  done
fi

if [ "$stage" -le 8 ] && [ "$stop_stage" -ge 8 ]; then
  log "stage 8: $exp/RESULTS.md"
  {
    echo "## $tag"
    echo
    echo "$(date '+%F'), $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc --all) CPU cores;" \
      "training $(cut -d' ' -f1 "$exp/train_seconds" 2>/dev/null || echo '?') s" \
      "($(cut -d' ' -f2 "$exp/train_seconds" 2>/dev/null || echo '?') CPU s, $threads thread(s));" \
      "decoding: ${beam_size:+beam $beam_size}${beam_size:-greedy}, language detected;" \
      "joint CTC/attention: ctc_weight $ctc_weight, beam $joint_beam_size."
    echo
    echo "    ./run.sh --experiment $experiment${train_args:+ --train-args \"$train_args\"}"
    echo
    for d in $test_sets; do cat "$exp/decode_$d/results.md"; echo; done
  } > "$exp/RESULTS.md"
  # As ESPnet: the run's table goes to exp/<tag>/RESULTS.md; the recipe's RESULTS.md is
  # curated from those, with the command that produced each.
  cat "$exp/RESULTS.md"
fi
