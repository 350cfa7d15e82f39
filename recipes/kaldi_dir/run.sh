#!/usr/bin/env bash
# Any corpus given as Kaldi data dirs + a Kaldi dict dir (no data_prep module needed): the same
# hybrid DNN-HMM + distillation stages as recipes/an4.
#
#   ./run.sh --train-dir /x/data/train --dev-dir /x/data/dev --test-dir /x/data/test \
#            --dict-dir /x/data/local/dict --data /x/kd/data --exp /x/kd/exp
#
# Data dirs: wav.scp, text, utt2spk, spk2utt (optional segments), sorted, speaker-prefixed
# utterance ids; the dict dir: lexicon.txt, silence_phones.txt, nonsilence_phones.txt,
# optional_silence.txt. No dev set? Give the test dir as --dev-dir too (tuning then sees test).
# Stage 0 only validates the input dirs; stages 1-9 are recipes/utils/hybrid_kd.sh.
set -euo pipefail
cd "$(dirname "$0")"

. ../utils/hybrid_kd_defaults.sh
mfcc_conf=../an4/conf/mfcc.yaml        # AN4's configs suit any 16 kHz corpus (8 kHz: ../yesno/conf)
fbank_conf=../an4/conf/fbank.yaml
dnn_conf=../an4/conf/dnn.yaml
distill_conf=../an4/conf/distill.yaml
train_dir=               # Kaldi data dir to train on (required)
dev_dir=                 # Kaldi data dir to tune on (required)
test_dir=                # Kaldi data dir to report on (required)
dict_dir=                # Kaldi dict dir (required)
. ../utils/parse_options.sh
[ $# -eq 0 ] || { echo "$0: unexpected argument(s): $* (see --help)" >&2; exit 1; }
for name in train_dir dev_dir test_dir dict_dir; do
  [ -n "${!name}" ] || { echo "$0: --${name//_/-} is required (see --help)" >&2; exit 1; }
done

. ../utils/hybrid_kd.sh

if in_stage 0; then
  echo "stage 0: validate the given data dirs"
  for set in $sets; do
    step validate_$set kd validate-data-dir "${set_dir[$set]}"
  done
fi

hybrid_kd_stages
