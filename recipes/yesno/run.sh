#!/usr/bin/env bash
# waves_yesno (OpenSLR 1, 8 kHz, 60 recordings): the hybrid DNN-HMM + distillation pipeline in
# about a minute; a smoke test of the whole toolkit more than an experiment.
#
#   ./run.sh                        # stage 0 downloads waves_yesno (~4.5 MB) unless a local copy is found
#   ./run.sh --corpus /tmp/yesno    # a local copy (the waves_yesno dir or its parent): nothing downloaded
#
# As Kaldi's egs/yesno: train = the first 31 files, test = the other 29 (one speaker), decoded with
# Kaldi's uniform unigram over YES/NO (conf/task.arpa, --lm). There is no dev set, so the LM weight
# and word penalty are tuned on test itself: its WER is optimistic (as Kaldi's score.sh there).
set -euo pipefail
cd "$(dirname "$0")"

. ../utils/hybrid_kd_defaults.sh
corpus=${YESNO_CORPUS:-}  # the waves_yesno dir or its parent, env YESNO_CORPUS; empty: --shared-corpus or download
shared_corpus=$(cd ../../.. && pwd)/shared/corpora/yesno  # local copy used if present when --corpus is empty
downloads=downloads       # with no local copy, stage 0 downloads and unpacks yesno here (mirror: ASR_KD_DOWNLOAD_URL)
mfcc_conf=conf/mfcc.yaml  # 8 kHz versions of AN4's feature configs
fbank_conf=conf/fbank.yaml
dnn_conf=../an4/conf/dnn.yaml
distill_conf=../an4/conf/distill.yaml
mono_tot_gauss=400        # as Kaldi's egs/yesno (train_mono.sh --totgauss 400)
dnn_jobs=2                # the baseline next to the ensemble, two students at once
num_leaves=20             # 2 words, 3 phones: a tiny tree
tot_gauss=200
hidden_dim=64
dnn_cmvn=utterance        # per-utterance CMN of the DNN fbank: with per-speaker CMN (one speaker) every DNN
                          # inserted 2 YES in test file 1_0_0_1_0_1_1_1 (tail of a NO read as the tail of a YES)
num_members=3
decode_members=3          # every member decoded (seconds each here): the target is every system's WER
lm=conf/task.arpa         # Kaldi's yesno grammar (input/task.arpabo): uniform unigram over YES/NO
beam=20                   # the graph is tiny (cheap to search); the dev lattice decoder has no min_active
                          # and at beam 11 prunes long-silence paths the best-path decoder keeps
. ../utils/parse_options.sh
[ $# -eq 0 ] || { echo "$0: unexpected argument(s): $* (see --help)" >&2; exit 1; }

download=false  # a local copy always wins: nothing is downloaded when one is given or found
if [ -z "$corpus" ]; then
  if [ -d "$shared_corpus" ]; then corpus=$shared_corpus; else corpus=$downloads; download=true; fi
fi
dict_dir=$data/local/dict
train_dir=$data/train
dev_dir=$data/test
test_dir=$data/test
. ../utils/hybrid_kd.sh

if in_stage 0; then
  echo "stage 0: yesno data dirs and dict dir from $corpus"
  if $download; then  # not a marked step: re-runs are no-ops (verified files and unpack markers are kept)
    "$python" -m data_prep.yesno download --dest "$downloads"
  fi
  step prepare_yesno "$python" -m data_prep.yesno prepare --corpus "$corpus" --out "$data"
fi

hybrid_kd_stages
