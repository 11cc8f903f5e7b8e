#!/usr/bin/env bash
# Mozilla Common Voice (CC0), any language: TSVs + 48 kHz mp3 clips -> 16 kHz FLAC data dirs,
# ESPnet's Common Voice Conformer (conf/experiment/commonvoice_conformer.yaml, trainer=gpu),
# BPE per language as ESPnet; WER on dev and test. Stages 2-8 are ../../../tools/asr.sh.
#   ./run.sh --cv-dir DIR [--lang it] [--stage N] [--stop-stage N] [--use-lm true]
#            [--train-tsv validated|train] [--remove-punctuation true] [asr.sh options ...]
# DIR is cv-corpus-<release> (holding <lang>/) or the <lang> folder itself.
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh

stage=0
stop_stage=100
cv_dir=""  # required: Common Voice is a manual download (see stage 0)
lang=it
train_tsv=validated  # validated minus dev/test (ESPnet) | train (Common Voice's own split)
text_case=upper  # upper | lower | keep (upper: as ESPnet)
remove_punctuation=false
nbpe=""  # empty: ESPnet's choice per language
nj=4
use_lm=false
skip_bad=false  # true: corpus problems are listed and left out instead of stopping stage 1
passthrough_unknown=true
. parse_options.sh

log() { echo -e "$(date '+%F %T') (run.sh) $*"; }
[ -n "$cv_dir" ] || { echo "$0: --cv-dir is required (see stage 0)" >&2; exit 1; }
lang_dir=$cv_dir; [ -f "$cv_dir/$lang/validated.tsv" ] && lang_dir=$cv_dir/$lang
if [ -z "$nbpe" ]; then  # ESPnet's egs2/commonvoice/asr1/run.sh
  case "$lang" in zh*) nbpe=2500 ;; fr) nbpe=350 ;; es) nbpe=235 ;; *) nbpe=150 ;; esac
fi

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  # Common Voice is downloaded by hand: commonvoice.mozilla.org/datasets (accept the terms,
  # give an e-mail, pick the language and release), then tar -xzf the tarball.
  missing=""
  for f in train.tsv dev.tsv test.tsv validated.tsv clips; do [ -e "$lang_dir/$f" ] || missing="$missing $f"; done
  if [ -n "$missing" ]; then
    echo "stage 0: $lang_dir lacks:$missing. Common Voice needs a manual download: get the '$lang'" \
         "tarball of a release from https://commonvoice.mozilla.org/datasets, unpack it and pass" \
         "--cv-dir cv-corpus-<release> (the folder holding $lang/)" >&2
    exit 1
  fi
  log "stage 0: using $lang_dir ($(find "$lang_dir/clips" -maxdepth 1 -name '*.mp3' | wc -l) clips)"
fi
if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  log "stage 1: data dirs train ($train_tsv), dev, test; mp3 -> 16 kHz FLAC in dump/audio_16k ($nj jobs)"
  python local/prepare_data.py --cv-dir "$lang_dir" --out data --train-tsv "$train_tsv" --audio-dir dump/audio_16k \
    --case "$text_case" --remove-punctuation "$remove_punctuation" --nj "$nj" --skip-bad "$skip_bad"
fi
[ "$stop_stage" -ge 2 ] || exit 0  # data preparation only
# Recipe defaults first; options given to run.sh come later and win.
asr.sh --stage "$((stage > 2 ? stage : 2))" --stop-stage "$stop_stage" \
  --experiment commonvoice_conformer --tag "commonvoice_conformer_${lang}" --token-type bpe --nbpe "$nbpe" \
  --test-sets "dev test" --beam-size 10 --ctc-weight 0.3 --num-avg 10 \
  --use-lm "$use_lm" --lm-experiment lm_lstm --lm-train-text data/train/text --lm-weight 0.3 \
  "${passthrough[@]}"
