#!/usr/bin/env bash
# LibriSpeech (OpenSLR 12) or mini-LibriSpeech (OpenSLR 31): hybrid DNN-HMM + distillation.
#
#   ./run.sh --corpus /data/LibriSpeech --lexicon /data/librispeech-lexicon.txt            # 100 h
#   ./run.sh --corpus /data/LibriSpeech --lexicon ... --train-set train_clean_5 --dev-set dev_clean_2 \
#            --test-set dev_clean_2                                                        # mini
#   ./run.sh --config ../an4/conf/gpu.conf ...                                            # paper size
#
# Data dirs are named after the subsets (train-clean-100 -> train_clean_100).
set -euo pipefail
cd "$(dirname "$0")"

. ../utils/hybrid_kd_defaults.sh
corpus=${LIBRISPEECH_CORPUS:-}  # dir holding the subset dirs (train-clean-100/, ...); env LIBRISPEECH_CORPUS
lexicon=                        # librispeech-lexicon.txt (OpenSLR 11)
train_set=train_clean_100       # data dir names written by stage 0
dev_set=dev_clean
test_set=test_clean
mfcc_conf=../an4/conf/mfcc.yaml  # LibriSpeech is 16 kHz like AN4
fbank_conf=../an4/conf/fbank.yaml
dnn_conf=../an4/conf/dnn.yaml
distill_conf=../an4/conf/distill.yaml
mono_num_utts=2000              # Kaldi's train_2kshort: monophones on the 2000 shortest utterances
tri_num_utts=5000               # Kaldi's train_5k: tri1 on 5000 utterances; then every set is aligned
num_leaves=2000                 # tri1 size for 100 h (Kaldi's tri1 on train_clean_100: 2000 / 10000)
tot_gauss=10000
hidden_dim=1024
. ../utils/parse_options.sh
[ $# -eq 0 ] || { echo "$0: unexpected argument(s): $* (see --help)" >&2; exit 1; }
[ -n "$corpus" ] && [ -n "$lexicon" ] || { echo "$0: give --corpus and --lexicon" >&2; exit 1; }

dict_dir=$data/local/dict
train_dir=$data/$train_set
dev_dir=$data/$dev_set
test_dir=$data/$test_set
. ../utils/hybrid_kd.sh

if in_stage 0; then
  echo "stage 0: LibriSpeech data dirs ($train_set $dev_set $test_set) and dict dir from $corpus"
  step prepare_librispeech "$python" -m data_prep.librispeech prepare --corpus "$corpus" --lexicon "$lexicon" \
    --out "$data" --subsets ${train_set//_/-} ${dev_set//_/-} ${test_set//_/-} --map-oov
fi

hybrid_kd_stages
