#!/usr/bin/env bash
# LibriSpeech (Panayotov et al. 2015, CC BY 4.0): 100 h (train-clean-100) or 960 h (+ clean-360,
# other-500); ESPnet's configs (conf/experiment/, trainer=gpu), BPE 5000; WER on dev/test
# clean/other. Stages 2-8 are ../../../tools/asr.sh (5 = the optional Transformer LM).
#   ./run.sh [--size 100|960] [--librispeech-dir DIR] [--stage N] [--stop-stage N]
#            [--use-lm true] [asr.sh options: --experiment NAME --train-args "..." ...]
# One GPU node: the presets train with trainer=gpu (all visible GPUs, DDP, bf16); see
# README.md for the batch size per GPU count and for multi-node launches.
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh

stage=0
stop_stage=100
size=100  # 100: train-clean-100; 960: + train-clean-360 + train-other-500
librispeech_dir=downloads  # holds LibriSpeech/<subset>/ (stage 0 downloads into it)
data_url=https://www.openslr.org/resources/12
lm_text=false  # true: stage 0 also fetches librispeech-lm-norm.txt.gz (openslr 11) for the LM
use_lm=false
skip_bad=false  # true: corpus problems are listed and left out instead of stopping stage 1
passthrough_unknown=true
. parse_options.sh

log() { echo -e "$(date '+%F %T') (run.sh) $*"; }
case "$size" in
  100) train_subsets="train-clean-100"; experiment=librispeech100_conformer; lm_weight=0.3; beam=20 ;;
  960) train_subsets="train-clean-100 train-clean-360 train-other-500"; experiment=librispeech960_e_branchformer
       lm_weight=0.6; beam=60 ;;
  *) echo "$0: --size must be 100 or 960" >&2; exit 1 ;;
esac
eval_subsets="dev-clean dev-other test-clean test-other"

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  log "stage 0: download $train_subsets $eval_subsets into $librispeech_dir (openslr.org/resources/12)"
  lm_opt=(); [ "$lm_text" = true ] && lm_opt=(--lm-text)
  # shellcheck disable=SC2086
  python local/download.py "$librispeech_dir" --url "$data_url" "${lm_opt[@]}" $train_subsets $eval_subsets
fi
if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  log "stage 1: data dirs: train = $train_subsets, dev = dev-clean + dev-other, and each eval subset"
  python local/prepare_data.py --librispeech-dir "$librispeech_dir" --out data --train "$train_subsets" \
    --dev "dev-clean dev-other" --test "$eval_subsets" --skip-bad "$skip_bad"
  # LM training text (Kaldi "id text" lines, as ESPnet's lm_train_text): the training
  # transcripts, plus the 800M-word LibriSpeech LM corpus when it was downloaded.
  mkdir -p data/local
  cp data/train/text data/local/lm_train.txt
  if [ -f "$librispeech_dir/librispeech-lm-norm.txt.gz" ]; then
    gzip -dc "$librispeech_dir/librispeech-lm-norm.txt.gz" | awk '{ printf("librispeech_lng_%08d %s\n", NR, $0) }' \
      >> data/local/lm_train.txt
  fi
fi
[ "$stop_stage" -ge 2 ] || exit 0  # data preparation only
# Recipe defaults first; options given to run.sh come later and win. ESPnet decodes
# LibriSpeech with beam 20 (100 h) / 60 (960 h), ctc_weight 0.3, and averages 10 checkpoints.
asr.sh --stage "$((stage > 2 ? stage : 2))" --stop-stage "$stop_stage" \
  --experiment "$experiment" --token-type bpe --nbpe 5000 \
  --test-sets "dev_clean dev_other test_clean test_other" --valid-set dev \
  --beam-size "$beam" --ctc-weight 0.3 --num-avg 10 \
  --use-lm "$use_lm" --lm-experiment librispeech_lm_transformer --lm-train-text data/local/lm_train.txt \
  --lm-weight "$lm_weight" "${passthrough[@]}"
