#!/usr/bin/env bash
# waves_yesno (OpenSLR 1, 8 kHz, 60 recordings): the hybrid DNN-HMM + distillation pipeline in
# about a minute; a smoke test of the whole toolkit more than an experiment.
#
#   python -m data_prep.yesno download --dest /tmp/yesno && ./run.sh --corpus /tmp/yesno
#
# yesno has no dev set (train = first 30 files, test = the rest, one speaker), so the decoder's
# acoustic scale is tuned on test itself: its WER is optimistic (as Kaldi's egs/yesno).
set -euo pipefail
cd "$(dirname "$0")"

. ../utils/hybrid_kd_defaults.sh
corpus=${YESNO_CORPUS:-}  # the waves_yesno dir (or its parent); env YESNO_CORPUS
mfcc_conf=conf/mfcc.yaml  # 8 kHz versions of AN4's feature configs
fbank_conf=conf/fbank.yaml
dnn_conf=../an4/conf/dnn.yaml
distill_conf=../an4/conf/distill.yaml
num_leaves=20             # 2 words, 3 phones: a tiny tree
tot_gauss=200
hidden_dim=64
num_members=3
. ../utils/parse_options.sh
[ $# -eq 0 ] || { echo "$0: unexpected argument(s): $* (see --help)" >&2; exit 1; }
[ -n "$corpus" ] || { echo "$0: give --corpus (or YESNO_CORPUS)" >&2; exit 1; }

dict_dir=$data/local/dict
train_dir=$data/train
dev_dir=$data/test
test_dir=$data/test
. ../utils/hybrid_kd.sh

if in_stage 0; then
  echo "stage 0: yesno data dirs and dict dir from $corpus"
  step prepare_yesno "$python" -m data_prep.yesno prepare --corpus "$corpus" --out "$data"
fi

hybrid_kd_stages
