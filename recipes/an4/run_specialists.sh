#!/usr/bin/env bash
# AN4: specialist models (Hinton et al. 2015 §5) for the baseline DNN of ./run.sh, and their table.
#
#   ./run.sh --stop-stage 5 && ./run_specialists.sh     # needs the baseline DNN (stage 5) and alignments
#   ./run_specialists.sh --num-clusters 20 --overlap 0  # then ./run.sh --stage 9 puts the table in the report
#
# Steps (markers in exp/.done/, logs in exp/log/): train-specialists (pdf clusters from the baseline's
# predictions, one specialist per cluster; a killed run resumes), eval-specialists on dev and test
# (exp/specialists_<setting>/specialist_table.{md,json}), report.
set -euo pipefail
cd "$(dirname "$0")"

. ../utils/hybrid_kd_defaults.sh
num_clusters=16          # k-means clusters of pdfs (those with <= 150 pdfs get a specialist)
overlap=0.1              # a pdf also joins clusters within (1 + overlap) x its own centroid's distance; 0 = disjoint
specialist_epochs=3      # epochs of each specialist (best dev epoch kept)
top_n=1                  # a specialist is active where the generalist's top-n pdf is in its cluster
. ../utils/parse_options.sh
[ $# -eq 0 ] || { echo "$0: unexpected argument(s): $* (see --help)" >&2; exit 1; }

dict_dir=$data/local/dict train_dir=$data/train dev_dir=$data/dev test_dir=$data/test
. ../utils/hybrid_kd.sh
tag=k${num_clusters}_o${overlap}_e${specialist_epochs}
specialists=$exp/specialists_$tag  # one dir per setting: the report shows every table it finds

echo "specialists of $dnn into $specialists"
step "train_specialists_$tag" \
  kd train-specialists "$dnn" "$fbank/train" "$ali" "$fbank/dev" "$(ali_of dev)" "$specialists" \
    --set num_clusters=$num_clusters --set overlap=$overlap --set top_n=$top_n \
    --set train.max_epochs=$specialist_epochs --device "$nnet_device"
fresh_step "eval_specialists_${tag}_top$top_n" "$specialists/specialist_table.json" \
  kd eval-specialists "$specialists" --top-n $top_n --eval dev "$fbank/dev" "$(ali_of dev)" \
    --eval test "$fbank/test" "$(ali_of test)" --device "$nnet_device"
kd report "$exp" --out "$report"
echo "table: $specialists/specialist_table.md; report: $report/RESULTS.md"
