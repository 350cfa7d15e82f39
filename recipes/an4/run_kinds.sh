#!/usr/bin/env bash
# AN4: kinds of distillation side by side (issue 14), every student the same size as the main
# recipe's (hidden_layers x hidden_dim), each method a configuration of the same trainer and loss
# registry; one seed, few epochs (2-core CPU budget). Reuses a finished ./run.sh's --data and --exp
# (features, tri1 alignments and graph, the dnn ensemble); writes only below $exp/kinds.
#
#   ./run_kinds.sh --data /tmp/an4/data --exp /tmp/an4/exp --max-epochs 3
#
# Stages: 1 each row in turn, trained then its frame metrics (int8 rows through dynamic int8):
# hard-label baseline, the paper's distillation, post-training int8 of it, hints,
# teacher-initialised student, similarity-preserving, mutual learning, born-again generations,
# quantisation-aware, mixed-architecture teacher (the extra teachers, a deeper dnn and tdnn
# members, are trained just before the rows that need them); 2 decoding of every row (dev-tuned);
# 3 the table ($exp/kinds/report/KINDS.md), which marks rows not finished yet.
set -euo pipefail
cd "$(dirname "$0")"

. ../utils/hybrid_kd_defaults.sh
kinds_temperature=2      # soft-target temperature of every distilled student here
deep_layers=4            # hidden-layer teacher (hints, DistilBERT, SP): deep_layers x hidden_dim dnn
hint_layers="0 1"        # hints: student hidden layer <- teacher hidden layer (FitNets: middle layers)
init_layers="[0, 2]"     # DistilBERT: teacher layers copied into the student's hidden layers
sp_layers="-1 -1"        # similarity-preserving: student layer, teacher layer
hint_weight=1.0          # weight of the hint term (next to soft_ce 1 + hard_ce $hard_weight)
cos_weight=1.0           # weight of the DistilBERT cosine term
sp_weight=100.0          # weight of the SP term (Tung & Mori use gamma = 3000 on CIFAR with larger batches)
kinds_steps=0            # >0: every model here trains at most this many steps per epoch (CPU budget)
tdnn_members=2           # tdnn members joining the dnn ensemble in the mixed-architecture teacher
mutual_peers=2           # K peers of mutual learning
generations=2            # born-again generations
. ../utils/parse_options.sh
[ $# -eq 0 ] || { echo "$0: unexpected argument(s): $* (see --help)" >&2; exit 1; }

train_dir=$data/train; dev_dir=$data/dev; test_dir=$data/test; dict_dir=$data/local/dict
. ../utils/hybrid_kd.sh
kinds=$exp/kinds
deep=$kinds/teacher_deep
tdnn=$kinds/tdnn_members
soft="{soft_ce: 1.0, hard_ce: $hard_weight}"
sets_args=("$dnn_feats" "$dnn_ali" "$fbank/dev" "${ali}_dev")
model_size+=(--set max_steps_per_epoch=$kinds_steps)
student_size+=(--set student.max_steps_per_epoch=$kinds_steps)
students=(--config "$distill_conf" "${student_size[@]}" --set loss.temperature=$kinds_temperature)
ens_teacher=(--teacher "$ensemble" --combination "$combination")
read -r hint_s hint_t <<<"$hint_layers"
read -r sp_s sp_t <<<"$sp_layers"

# rows: name -> model dir, and the step that trained it
declare -A row_model=([baseline]=$kinds/baseline [distill]=$kinds/distill [ptq_int8]=$kinds/distill [hint]=$kinds/hint
  [distilbert]=$kinds/distilbert [sp]=$kinds/sp [mutual]=$kinds/mutual/peer_0 [qat_fp32]=$kinds/qat
  [qat_int8]=$kinds/qat [mixed_teacher]=$kinds/mixed_teacher [teacher_deep]=$deep)
declare -A row_step=([ptq_int8]=distill [qat_fp32]=qat [qat_int8]=qat)
for r in "${!row_model[@]}"; do [ -n "${row_step[$r]:-}" ] || row_step[$r]=$r; done
for ((g = 1; g <= generations; g++)); do row_model[born_again_g$g]=$kinds/born_again/gen_$g; row_step[born_again_g$g]=born_again; done
rows=(baseline distill ptq_int8 hint distilbert sp mutual $(for ((g = 1; g <= generations; g++)); do echo born_again_g$g; done)
      qat_fp32 qat_int8 mixed_teacher teacher_deep)

# score ROW / decode ROW: frame metrics / those and dev-tuned decoding of the row's model (int8 rows:
# its dynamic-int8 copy)
int8_of() { [[ $1 == *_int8 ]] && echo --int8; return 0; }
score() { eval_dnn "kinds_$1" "$kinds/scores/$1" arith "${row_model[$1]}" $(int8_of "$1"); }
decode() { decode_dnn "kinds_$1" "$kinds/scores/$1" arith "${row_model[$1]}" $(int8_of "$1"); }

if in_stage 1; then
  echo "stage 1: rows, trained and frame-scored (${hidden_layers} x ${hidden_dim}, max ${max_epochs} epochs of at most ${kinds_steps} steps, seed $seed)"
  step kinds_baseline kd train --config "$dnn_conf" "${model_size[@]}" "${sets_args[@]}" "$kinds/baseline"
  score baseline
  step kinds_distill kd distill "${students[@]}" "${ens_teacher[@]}" --set "loss.terms=$soft" \
    "${sets_args[@]}" "$kinds/distill"
  score distill; score ptq_int8
  step kinds_teacher_deep kd train --config "$dnn_conf" "${model_size[@]}" --set model.hidden_layers=$deep_layers \
    "${sets_args[@]}" "$deep"
  score teacher_deep
  step kinds_hint kd distill "${students[@]}" "${ens_teacher[@]}" \
    --set "loss.terms={soft_ce: 1.0, hard_ce: $hard_weight, hint: $hint_weight}" --set hidden.teacher=$deep \
    --set hidden.student_layer=$hint_s --set hidden.teacher_layer=$hint_t "${sets_args[@]}" "$kinds/hint"
  score hint
  step kinds_distilbert kd distill "${students[@]}" "${ens_teacher[@]}" \
    --set "loss.terms={soft_ce: 1.0, hard_ce: $hard_weight, hidden_cos: $cos_weight}" --set hidden.teacher=$deep \
    --set "hidden.init_layers=$init_layers" --set hidden.student_layer=-1 --set hidden.teacher_layer=-1 \
    "${sets_args[@]}" "$kinds/distilbert"
  score distilbert
  step kinds_sp kd distill "${students[@]}" "${ens_teacher[@]}" \
    --set "loss.terms={soft_ce: 1.0, hard_ce: $hard_weight, sp: $sp_weight}" --set hidden.teacher=$deep \
    --set hidden.student_layer=$sp_s --set hidden.teacher_layer=$sp_t "${sets_args[@]}" "$kinds/sp"
  score sp
  step kinds_mutual kd mutual "${students[@]}" --set loss.temperature=1 \
    --set "loss.terms={hard_ce: 1.0, soft_kl: 1.0}" --k "$mutual_peers" "${sets_args[@]}" "$kinds/mutual"
  score mutual
  step kinds_born_again kd born-again "${students[@]}" "${ens_teacher[@]}" --set "loss.terms=$soft" \
    --generations "$generations" "${sets_args[@]}" "$kinds/born_again"
  for ((g = 1; g <= generations; g++)); do score born_again_g$g; done
  step kinds_qat kd distill "${students[@]}" "${ens_teacher[@]}" --set "loss.terms=$soft" --set fake_int8=true \
    "${sets_args[@]}" "$kinds/qat"
  score qat_fp32; score qat_int8
  step kinds_tdnn_members kd train-ensemble --config "$dnn_conf" "${model_size[@]}" --set seed=$((member_seed + 50)) \
    --architectures conf/tdnn_members.yaml --k "$tdnn_members" "${sets_args[@]}" "$tdnn"
  step kinds_mixed_teacher kd distill "${students[@]}" "${ens_teacher[@]}" --teacher "$tdnn" --set "loss.terms=$soft" \
    "${sets_args[@]}" "$kinds/mixed_teacher"
  score mixed_teacher
fi

if in_stage 2; then
  echo "stage 2: decoding (acoustic scale and word penalty tuned on dev)"
  for r in "${rows[@]}"; do [[ $r == teacher_deep || $r == qat_fp32 ]] || decode "$r"; done  # frame metrics only
fi

if in_stage 3; then
  echo "stage 3: the kinds-of-distillation table"
  row_args=()
  for r in "${rows[@]}"; do row_args+=(--row "$r" "${row_model[$r]}" "$kinds/scores/$r" "kinds_${row_step[$r]}"); done
  kd report-kinds "$kinds/report" "${row_args[@]}" --done-dir "$done_dir" --seed "$seed"
fi
