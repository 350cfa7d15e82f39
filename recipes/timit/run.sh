#!/usr/bin/env bash
# TIMIT (LDC93S1, licensed): phone recognition with a hybrid DNN-HMM + distillation; "WER" is the
# phone error rate after folding to Lee & Hon's 39 phones (the 48-phone PER is kept next to it in
# wer.json and the report), LM a phone bigram on train.
#
#   ./run.sh --corpus /data/TIMIT
set -euo pipefail
cd "$(dirname "$0")"

. ../utils/hybrid_kd_defaults.sh
corpus=${TIMIT_CORPUS:-}  # TIMIT root (TRAIN/ and TEST/); env TIMIT_CORPUS
mfcc_conf=../an4/conf/mfcc.yaml  # 16 kHz like AN4
fbank_conf=../an4/conf/fbank.yaml
dnn_conf=../an4/conf/dnn.yaml
distill_conf=../an4/conf/distill.yaml
num_leaves=1000
tot_gauss=8000
. ../utils/parse_options.sh
[ $# -eq 0 ] || { echo "$0: unexpected argument(s): $* (see --help)" >&2; exit 1; }
[ -n "$corpus" ] || { echo "$0: give --corpus (or TIMIT_CORPUS)" >&2; exit 1; }
score_map=${score_map:-$data/local/phones.48-39.map}  # written by stage 0: score on 39 phones

dict_dir=$data/local/dict
train_dir=$data/train
dev_dir=$data/dev
test_dir=$data/test
. ../utils/hybrid_kd.sh

if in_stage 0; then
  echo "stage 0: TIMIT data dirs (train, dev, core test) and dict dir from $corpus"
  step prepare_timit "$python" -m data_prep.timit prepare --corpus "$corpus" --out "$data"
fi

hybrid_kd_stages
