#!/usr/bin/env bash
# LibriSpeech (OpenSLR 12) or mini-LibriSpeech (OpenSLR 31): hybrid DNN-HMM + distillation.
#
#   ./run.sh                                                     # downloads 100 h + dev/test (7 GB)
#   ./run.sh --train-set train_clean_5 --dev-set dev_clean_2 --test-set dev_clean_2        # mini (459 MB)
#   ./run.sh --corpus /data/LibriSpeech --lexicon /data/librispeech-lexicon.txt            # local copy
#   ./run.sh --config ../an4/conf/gpu.conf ...                                            # paper size
#
# Data dirs are named after the subsets (train-clean-100 -> train_clean_100). Stage 0 downloads
# into --downloads whatever is not given locally: the three sets' subsets when --corpus is empty
# and no --shared-corpus exists, librispeech-lexicon.txt when --lexicon is empty, and the official
# LM files named by --official-lms (not used by the later stages, which train their own n-gram).
set -euo pipefail
cd "$(dirname "$0")"

. ../utils/hybrid_kd_defaults.sh
corpus=${LIBRISPEECH_CORPUS:-}  # dir holding the subset dirs, env LIBRISPEECH_CORPUS; empty: --shared-corpus or download
shared_corpus=$(cd ../../.. && pwd)/shared/corpora/LibriSpeech  # local copy used if present when --corpus is empty
lexicon=                        # librispeech-lexicon.txt (OpenSLR 11); empty: downloaded into --downloads
downloads=downloads             # where stage 0 downloads and unpacks what is not given (mirror: ASR_KD_DOWNLOAD_URL)
official_lms=                   # OpenSLR 11 LM files to download too, e.g. "3-gram.pruned.1e-7.arpa.gz"
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

subsets=""  # the sets' subsets, each once (mini-LibriSpeech's dev and test are both dev-clean-2)
for set in $train_set $dev_set $test_set; do [[ " $subsets " == *" ${set//_/-} "* ]] || subsets+=" ${set//_/-}"; done
download=()  # what stage 0 fetches: a local copy always wins
if [ -z "$corpus" ] && [ -d "$shared_corpus" ]; then corpus=$shared_corpus; fi
[ -n "$corpus" ] || { corpus=$downloads/LibriSpeech; download+=(--subsets $subsets); }
[ -n "$lexicon" ] || { lexicon=$downloads/librispeech-lexicon.txt; download+=(--lexicon); }
[ -z "$official_lms" ] || download+=(--lm $official_lms)
dict_dir=$data/local/dict
train_dir=$data/$train_set
dev_dir=$data/$dev_set
test_dir=$data/$test_set
. ../utils/hybrid_kd.sh

if in_stage 0; then
  echo "stage 0: LibriSpeech data dirs ($train_set $dev_set $test_set) and dict dir from $corpus"
  if [ ${#download[@]} -gt 0 ]; then  # not a marked step: re-runs are no-ops (verified files are kept)
    "$python" -m data_prep.librispeech download --dest "$downloads" "${download[@]}"
  fi
  step prepare_librispeech "$python" -m data_prep.librispeech prepare --corpus "$corpus" --lexicon "$lexicon" \
    --out "$data" --subsets $subsets --map-oov
fi

hybrid_kd_stages
