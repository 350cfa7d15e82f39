#!/usr/bin/env bash
# CMU AN4: hybrid DNN-HMM baseline, ensemble and distilled students (Hinton et al. 2015 §4), to WER.
#
#   ./run.sh                                   # CPU defaults, ~15 min on 2 cores
#   ./run.sh --config conf/gpu.conf            # paper-size ensemble (K=10, 8 x 2560) on a GPU
#   ./run.sh --stage 5 --stop-stage 9          # re-run from the baseline DNN on
#   ./run.sh --data /tmp/an4/data --exp /tmp/an4/exp --subset 40   # smoke test on 40 utts per set
#
# Stages: 0 data prep (first downloads AN4, ~64 MB, if no local copy is given or found), 1 lang + LM,
# 2 features, 3 mono, 4 tri1 + alignments + GMM decode, 5 baseline DNN, 6 ensemble, 7 distillation,
# 8 DNN decoding, 9 report (exp/report/RESULTS.md).
# Finished steps are skipped on re-runs (markers in exp/.done/); logs in exp/log/.
set -euo pipefail
cd "$(dirname "$0")"

. ../utils/hybrid_kd_defaults.sh
corpus=${AN4_CORPUS:-}   # AN4 dir (etc/, wav/) or its parent, env AN4_CORPUS; empty: --shared-corpus or download
shared_corpus=$(cd ../../.. && pwd)/shared/corpora/an4  # local copy used if present when --corpus is empty
downloads=downloads      # with no local copy, stage 0 downloads and unpacks AN4 here (mirror: ASR_KD_DOWNLOAD_URL)
subset=0                 # >0: keep only the first N utterances of each set (smoke tests)
dnn_jobs=2               # the baseline next to the ensemble, two students at once: both cores (AN4 fits twice)
num_leaves=500           # tri1 size measured on AN4 (0.8 h; the auto rule would give 450 / 2250)
tot_gauss=4000
. ../utils/parse_options.sh
[ $# -eq 0 ] || { echo "$0: unexpected argument(s): $* (see --help)" >&2; exit 1; }

# ------------------------------------------------------------------ paths (before any stage)
download=false  # a local copy always wins: nothing is downloaded when one is given or found
if [ -z "$corpus" ]; then
  if [ -d "$shared_corpus" ]; then corpus=$shared_corpus; else corpus=$downloads; download=true; fi
fi
dict_dir=$data/local/dict
suffix=""; [ "$subset" -gt 0 ] && suffix=_sub$subset
train_dir=$data/train$suffix
dev_dir=$data/dev$suffix
test_dir=$data/test$suffix
. ../utils/hybrid_kd.sh

# ------------------------------------------------------------------ stage 0: data prep
if in_stage 0; then
  echo "stage 0: AN4 data dirs and dict dir from $corpus"
  if $download; then  # not a marked step: re-runs are no-ops (verified files and unpack markers are kept)
    "$python" -m data_prep.an4 download --dest "$downloads"
  fi
  step prepare_an4 "$python" -m data_prep.an4 prepare --corpus "$corpus" --out "$data"
  if [ "$subset" -gt 0 ]; then
    for set in train dev test; do
      fresh_step subset_$set "$data/$set$suffix" kd subset-data-dir --first "$subset" "$data/$set" "$data/$set$suffix"
    done
  fi
fi

hybrid_kd_stages
