#!/usr/bin/env bash
# Does self-supervised pretraining buy labels? FSDD connected digits (real speech, CC BY-SA
# 4.0, Zohar Jackson and contributors), speaker theo held out. Pretrain the recipe's encoder
# (egs/fsdd/asr's 3 x 96 Conformer) with wav2vec 2.0, HuBERT (iterations 1 and 2) and BEST-RQ
# on unlabelled audio (the training speakers' recordings without their transcripts, plus
# espeak-ng speech from many synthetic voices), then fine-tune it with CTC on 1%, 10% and
# 100% of the labelled FSDD training utterances, against the same model from scratch at the
# same number of updates. The label-efficiency table goes to exp/RESULTS.md.
#   ./run.sh [--fsdd-dir DIR] [--stage N] [--stop-stage N] [--objectives "wav2vec2 hubert_it1 hubert_it2 best_rq"]
#            [--fractions "1 10 100"] [--test-sets "test dev"] [--jobs 2] [--speed-perturb true] [--tiny true]
# Stages: 0 FSDD, 1 labelled data + subsets (+ 3-way speed-perturbed copies), 2 unlabelled pretraining data, 3 validate +
# CMVN, 4 tokenizer, 5 HuBERT iteration-1 labels (MFCC k-means), 6 pretraining (HuBERT
# iteration 2's labels from the iteration-1 model between its runs), 7 fine-tuning, 8 decode
# + score + table.
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh

stage=0
stop_stage=100
fsdd_dir=""            # a local copy (DIR/recordings/*.wav); empty: download in stage 0
test_speakers=theo
synth_voices=800       # espeak-ng speakers (accent + variant pairs; 832 exist) in the pretraining audio
synth_per_voice=3
objectives="hubert_it1 hubert_it2 wav2vec2 best_rq"
fractions="1 10 100"   # percent of the labelled FSDD training utterances
test_sets="test dev"   # decoded in stage 8 (test: the held-out speaker)
clusters=100           # k-means k for HuBERT's labels
kmeans_percent=50      # share of the pretraining utterances k-means learns from
it2_layer=2            # the iteration-1 encoder layer clustered for iteration 2
jobs=2                 # trainings run side by side (one torch thread each)
speed_perturb=false    # true: fine-tune on the 3-way speed-perturbed subsets (0.9/1.0/1.1), scratch and pretrained alike (RESULTS.md: run 3)
freeze_steps=0         # a pretrained encoder frozen for the first N updates (only the CTC head trains); 300 helps at 1%
finetune_inits=""      # stage 7-8: the encoders to fine-tune (default: scratch and every objective)
tiny=false             # smoke test: a few utterances, a few updates
pretrain_args=""
finetune_args=""
append_options="pretrain_args finetune_args"
. parse_options.sh

export OMP_NUM_THREADS=1
log() { echo -e "$(date '+%F %T') (run.sh) $*"; }
[ -n "$fsdd_dir" ] || fsdd_dir=downloads/fsdd
if [ "$tiny" = true ]; then
  synth_voices=4; synth_per_voice=2
  pretrain_args="trainer.max_epochs=1 +trainer.limit_train_batches=3 +trainer.limit_val_batches=1 $pretrain_args"
  finetune_args="trainer.max_steps=4 trainer.val_check_interval=2 +trainer.limit_val_batches=1 $finetune_args"
fi

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  if [ -d "$fsdd_dir/recordings" ]; then log "stage 0: using $fsdd_dir"
  else log "stage 0: download FSDD into $fsdd_dir"; python "$MAIN_ROOT/egs/fsdd/asr/local/download.py" "$fsdd_dir"; fi
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  log "stage 1: labelled connected digits (egs/fsdd/asr's data: train, dev, test=$test_speakers) and subsets"
  size=(); [ "$tiny" = true ] && size=(--train-per-speaker 10 --dev-per-speaker 2 --test-per-speaker 8)
  python "$MAIN_ROOT/egs/fsdd/asr/local/prepare_data.py" --fsdd-dir "$fsdd_dir" --out data --test-speakers "$test_speakers" "${size[@]}"
  n=$(wc -l < data/train/wav.scp)
  for f in $fractions; do
    [ "$f" = 100 ] && { rm -rf data/train_100; cp -r data/train data/train_100; continue; }
    k=$(( (n * f + 99) / 100 ))
    python -m speechlm.bin.subset_data_dir data/train "data/train_$f" --random "$k" --seed 0
  done
  if [ "$speed_perturb" = true ]; then
    for f in $fractions; do python -m speechlm.bin.perturb_speed "data/train_$f" "data/train_${f}_sp"; done
  fi
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  log "stage 2: unlabelled audio: data/train without text + $synth_voices x $synth_per_voice espeak-ng utterances"
  # The asr recipe's own synthetic speakers (8 kHz like FSDD, same levels); its FSDD splits
  # are rebuilt identically in data/synth_prep and only train_synth is kept.
  size=(); [ "$tiny" = true ] && size=(--train-per-speaker 2 --dev-per-speaker 1 --test-per-speaker 1)
  python "$MAIN_ROOT/egs/fsdd/asr/local/prepare_data.py" --fsdd-dir "$fsdd_dir" --out data/synth_prep --test-speakers "$test_speakers" \
    --synth-voices "$synth_voices" --synth-per-voice "$synth_per_voice" "${size[@]}"
  python local/unlabelled.py data/pretrain data/train data/synth_prep/train_synth
  python local/unlabelled.py data/dev_audio data/dev
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  log "stage 3: validate, CMVN statistics of the pretraining audio (shared by every model here)"
  for d in pretrain dev_audio; do
    python -m speechlm.bin.validate_data_dir "data/$d" --audio --sample-rate 16000 --no-text
  done
  for d in train dev test; do
    python -m speechlm.bin.validate_data_dir "data/$d" --audio --sample-rate 16000
  done
  python -m speechlm.bin.compute_cmvn data/pretrain data/cmvn.npz --config-dir conf experiment=ssl_encoder
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  log "stage 4: word tokenizer (the ten digits)"
  python -m speechlm.bin.train_tokenizer --data-dir data/train --type word --out data/tokenizer
fi

kmeans_labels() {  # FEATS_SOURCE_ARGS... -- TAG: k-means on data/pretrain, km tables for pretrain + dev_audio
  local tag=$1; shift
  python -m speechlm.bin.dump_features data/pretrain "dump/$tag/pretrain_sub" "$@" --percent "$kmeans_percent"
  python -m speechlm.bin.kmeans learn "dump/$tag/pretrain_sub" "dump/$tag/km" --clusters "$clusters"
  for d in pretrain dev_audio; do
    python -m speechlm.bin.dump_features "data/$d" "dump/$tag/$d" "$@"
    python -m speechlm.bin.kmeans apply "dump/$tag/$d" "dump/$tag/km" "data/$d" --table "km_$tag"
  done
}

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ] && [[ " $objectives " == *" hubert_it1 "* ]]; then
  log "stage 5: HuBERT iteration-1 labels: k-means (k=$clusters) of 39-dim MFCC"
  kmeans_labels mfcc --mfcc
fi

pretrain() {  # OBJECTIVE PRESET [extra overrides]: exp/pretrain_OBJECTIVE/model.avg.ckpt
  local name=$1 preset=$2; shift 2
  local exp=exp/pretrain_$name start
  start=$(date +%s)
  # shellcheck disable=SC2086
  python -m speechlm.bin.train --config-dir conf experiment="$preset" exp_dir="$exp" \
    data.train_dir=data/pretrain data.valid_dir=data/dev_audio cmvn_stats=data/cmvn.npz "$@" $pretrain_args \
    > "$exp.log" 2>&1 || { log "pretraining $name failed: see $exp.log"; return 1; }
  echo "$(( $(date +%s) - start ))" > "$exp/train_seconds"
  python -m speechlm.bin.average_checkpoints "$exp" --num 1 > /dev/null
  log "pretrained $name in $(cat "$exp/train_seconds") s"
}

hubert_iterations() {  # iteration 1, its layer's k-means labels, iteration 2 (one job)
  pretrain hubert_it1 hubert data.tables.km=km_mfcc || return 1
  [[ " $objectives " == *" hubert_it2 "* ]] || return 0
  log "HuBERT iteration-2 labels: k-means of layer $it2_layer of the iteration-1 model"
  kmeans_labels it2 --model exp/pretrain_hubert_it1/model.avg.ckpt --layer "$it2_layer" > exp/kmeans_it2.log 2>&1 \
    || { log "HuBERT iteration-2 labels failed: see exp/kmeans_it2.log"; return 1; }
  pretrain hubert_it2 hubert data.tables.km=km_it2
}

if [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ]; then
  log "stage 6: pretraining ($objectives; $jobs at a time)"
  mkdir -p exp
  pids=()
  for o in $objectives; do
    case $o in
      wav2vec2|best_rq) pretrain "$o" "$o" & pids+=($!) ;;
      hubert_it1) hubert_iterations & pids+=($!) ;;
      hubert_it2) [[ " $objectives " == *" hubert_it1 "* ]] || { echo "hubert_it2 needs hubert_it1" >&2; exit 1; } ;;
      *) echo "unknown objective $o" >&2; exit 1 ;;
    esac
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n; done
  done
  for p in "${pids[@]}"; do wait "$p"; done
fi

finetune() {  # INIT FRACTION: exp/ft_INIT_FRACTION
  local init=$1 f=$2 exp=exp/ft_$1_$2 args=() start train=data/train_$2
  [ "$speed_perturb" = true ] && train=${train}_sp
  [ "$init" = scratch ] || args=(encoder.init_from="exp/pretrain_$init/model.avg.ckpt"
                                 "+optim.groups.encoder.freeze_steps=$freeze_steps")
  start=$(date +%s)
  # shellcheck disable=SC2086
  python -m speechlm.bin.train --config-dir conf experiment=finetune_ctc exp_dir="$exp" \
    data.train_dir="$train" data.valid_dir=data/dev tokenizer_dir=data/tokenizer cmvn_stats=data/cmvn.npz \
    "${args[@]}" $finetune_args > "$exp.log" 2>&1 || { log "fine-tuning $init on $f% failed: see $exp.log"; return 1; }
  echo "$(( $(date +%s) - start ))" > "$exp/train_seconds"
}

[ -n "$finetune_inits" ] || finetune_inits="scratch $objectives"
if [ "$stage" -le 7 ] && [ "$stop_stage" -ge 7 ]; then
  log "stage 7: CTC fine-tuning on ${fractions// /%, }% of the labels ($finetune_inits; $jobs at a time)"
  mkdir -p exp
  for init in $finetune_inits; do
    for f in $fractions; do
      finetune "$init" "$f" &
      while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n; done
    done
  done
  wait
fi

if [ "$stage" -le 8 ] && [ "$stop_stage" -ge 8 ]; then
  log "stage 8: decode $test_sets (CTC greedy), score, label-efficiency table"
  for init in $finetune_inits; do
    for f in $fractions; do
      exp=exp/ft_${init}_$f
      python -m speechlm.bin.average_checkpoints "$exp" --num 3 > /dev/null
      for d in $test_sets; do
        python -m speechlm.bin.decode checkpoint="$exp/model.avg.ckpt" data_dir="data/$d" out_dir="$exp/decode_$d" > /dev/null
        python -m speechlm.bin.score "$exp/decode_$d" --results-md "$exp/RESULTS.md" --dataset "$d" > /dev/null
      done
    done
  done
  python local/label_efficiency.py exp --inits "$finetune_inits" --fractions "$fractions" --out exp/RESULTS.md
  cat exp/RESULTS.md
fi
