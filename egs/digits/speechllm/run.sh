#!/usr/bin/env bash
# Speech-LLM on spoken digits (CPU, minutes): a frozen digits ASR encoder -> adapter -> a small
# LLaMA-shaped LM (pretrained here on text, saved in Hugging Face format) with LoRA, trained on
# instruction tasks: transcription, spoken question answering (sum / count / last digit) and
# translation of the digits into German words.
#   ./run.sh [--stage N] [--stop-stage N] [--train-voices 300] [--train-per-voice 4] [--lm-lines 20000] ...
# Stages:
#   1 data: espeak-ng digit strings (../asr's corpus; test voices held out) + task tables
#   2 speech encoder: CTC/attention ASR model (tools/asr.sh stages 3-8), the transcription baseline
#   3 text LM: corpus (digit strings, arithmetic, question/answer templates), HF BPE tokenizer,
#     a LLaMA-shaped CausalLM trained with speechlm.bin.train, exported to exp/lm/hf (HF format);
#     its answers on the test transcripts (text in, no audio) -> exp/lm/RESULTS.md
#   4 speech-LLM: frozen encoder + adapter + frozen LM with LoRA (experiment=speech_llm)
#   5 decode every task on the test sets
#   6 score: WER (transcription, translation), accuracy per question type -> exp/<tag>/RESULTS.md
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh

stage=0
stop_stage=100
train_voices=300
train_per_voice=4
dev_voices=60
test_per_voice=30
nj=2
threads=1
asr_experiment=asr_encoder
lm_experiment=causal_lm_digits
experiment=speech_llm_digits
tag=""
test_sets="test"
lm_lines=20000        # LM pretraining text: lines (digit strings, arithmetic, task conversations)
lm_vocab=512          # its BPE tokenizer's vocabulary
num_avg=3
asr_args=""           # Hydra overrides of the ASR training (stage 2)
lm_args=""            # ... of the LM's (stage 3)
train_args=""         # ... of the speech-LLM's (stage 4)
decode_args=""        # ... of decoding (stage 5)
append_options="asr_args lm_args train_args decode_args"
. parse_options.sh

[ -z "$threads" ] || export OMP_NUM_THREADS=$threads
[ -n "$tag" ] || tag=$experiment
exp=exp/${tag}
log() { echo -e "$(date '+%F %T') (run.sh) $*"; }
tasks="transcribe qa_sum qa_count qa_last translate_de"

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  log "stage 1: data (espeak-ng digit strings, test voices held out) + task tables"
  python "$MAIN_ROOT/egs/digits/asr/local/prepare_data.py" --out data --train-voices "$train_voices" \
    --train-per-voice "$train_per_voice" --dev-voices "$dev_voices" --test-per-voice "$test_per_voice" \
    --num-workers "$nj"
  for d in train dev test; do
    python -m speechlm.bin.make_digit_tasks "data/$d"
  done
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  log "stage 2: the speech encoder (CTC/attention ASR, exp/asr): tools/asr.sh stages 3-8"
  asr.sh --stage 3 --stop-stage 8 --experiment "$asr_experiment" --tag asr --token-type word \
    --speed-perturb false --test-sets "$test_sets" --ctc-weight 0.7 --num-avg "$num_avg" --train-args "$asr_args"
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  log "stage 3: text LM: corpus, HF BPE tokenizer (chat template), $lm_experiment (exp/lm), HF export (exp/lm/hf)"
  mkdir -p data/lm
  python -m speechlm.bin.make_digit_tasks --lm-corpus data/lm/raw.txt --tasks conf/tasks/digits.yaml \
    --lines "$lm_lines" --seed 0
  python -m speechlm.bin.train_hf_tokenizer --text data/lm/raw.txt --vocab-size "$lm_vocab" \
    --chat-template chatml_inline --out data/lm_tokenizer
  python -m speechlm.bin.make_digit_tasks --lm-corpus data/lm/train.txt --tasks conf/tasks/digits.yaml \
    --tokenizer data/lm_tokenizer --lines "$lm_lines" --seed 1
  python -m speechlm.bin.make_digit_tasks --lm-corpus data/lm/valid.txt --tasks conf/tasks/digits.yaml \
    --tokenizer data/lm_tokenizer --lines $(( lm_lines / 20 + 10 )) --seed 2
  # shellcheck disable=SC2086
  python -m speechlm.bin.train --config-dir conf experiment="$lm_experiment" exp_dir=exp/lm \
    tokenizer_dir=data/lm_tokenizer data.train_text=data/lm/train.txt data.valid_text=data/lm/valid.txt $lm_args
  python -m speechlm.bin.average_checkpoints exp/lm --num "$num_avg"
  python -m speechlm.bin.export_causal_lm exp/lm/model.avg.ckpt exp/lm/hf
  # the LM's own answers with the transcript written where the audio goes: the speech-LLM's topline
  for d in $test_sets; do
    python local/eval_lm_text.py --lm exp/lm/hf --data "data/$d" --tasks conf/tasks/digits.yaml
  done | tee exp/lm/RESULTS.md
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  log "stage 4: speech-LLM $experiment ($exp): frozen exp/asr encoder + adapter + frozen exp/lm/hf with LoRA"
  # shellcheck disable=SC2086
  python -m speechlm.bin.train --config-dir conf experiment="$experiment" exp_dir="$exp" \
    model.encoder_checkpoint=exp/asr/model.avg.ckpt model.lm.path=exp/lm/hf tokenizer_dir=exp/lm/hf \
    data.train_dir=data/train data.valid_dir=data/dev $train_args
  python -m speechlm.bin.average_checkpoints "$exp" --num "$num_avg"
fi

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  log "stage 5: decode every task (its first instruction) on $test_sets"
  for d in $test_sets; do
    for task in $tasks; do
      # the task's answer table and first phrasing, from conf/tasks/digits.yaml
      table=$(python -c "import sys, yaml; print(yaml.safe_load(open('conf/tasks/digits.yaml'))[sys.argv[1]]['table'])" "$task")
      instruction=$(python -c "import sys, yaml; print(yaml.safe_load(open('conf/tasks/digits.yaml'))[sys.argv[1]]['instructions'][0])" "$task")
      # shellcheck disable=SC2086
      python -m speechlm.bin.decode checkpoint="$exp/model.avg.ckpt" data_dir="data/$d" \
        out_dir="$exp/decode_${d}_${task}" "search.instruction='$instruction'" ref_table="$table" $decode_args
    done
  done
fi

if [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ]; then
  log "stage 6: score -> $exp/RESULTS.md"
  rm -f "$exp/RESULTS.md"
  for d in $test_sets; do
    for task in $tasks; do
      python -m speechlm.bin.score "$exp/decode_${d}_${task}" --results-md "$exp/RESULTS.md" --tag "$tag" \
        --dataset "${d}_${task}" >/dev/null
    done
  done
  python local/summarize.py --exp "$exp" --baseline exp/asr --test-sets "$test_sets" --tasks "$tasks" \
    | tee "$exp/summary.md"
fi
