# Stages 1-9 shared by every recipe: lang + LM, features, GMM alignments, DNN baseline, ensemble,
# distillation, DNN decoding, report (Hinton, Vinyals & Dean 2015 §4).
#
# Sourced by recipes/<corpus>/run.sh after hybrid_kd_defaults.sh and parse_options.sh, with
#   train_dir dev_dir test_dir   Kaldi data dirs (wav.scp, text, utt2spk, spk2utt)
#   dict_dir                     Kaldi dict dir (lexicon.txt, *_phones.txt)
# set. Sourcing computes every path; the corpus's stage 0 runs next; then `hybrid_kd_stages`.
#
# Each step is one `asr-kd` call per data set. A step leaves a marker $exp/.done/<step> holding its
# fingerprint (command line + identities of its input stores/models, asr_kd/steps/recipe.py) and
# whether it finished. Re-running the recipe skips a finished step with the same fingerprint; a
# step whose fingerprint changed (other options or inputs) is redone from scratch, its old outputs
# removed first; a step killed midway is re-run from a clean output dir, except nnet training,
# which resumes from its last epoch checkpoint (bit-identical on CPU). Step logs: $exp/log/<step>.log.
# One run.sh per exp dir at a time ($exp/.lock); its asr-kd child dies with it, even on kill -9.

# ------------------------------------------------------------------ paths (before any stage)
. "$(dirname "${BASH_SOURCE[0]}")/find_python.sh"  # $python: --python, else the repo's .venv, else python3
# One intra-op thread per process unless the caller says otherwise: the recipe's DNNs are small, the GMM
# stages run --nj processes, and on a loaded 2-core machine two OpenMP threads per process made DNN
# training 13-17x slower (50 steps: 72.9 s vs 5.5 s; 213 vs 3,669 frames/s; in one make an4 a DNN epoch
# fell from 22,629 to 2,962 frames/s when other jobs started).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
sets="train dev test"
declare -A set_dir=([train]=$train_dir [dev]=$dev_dir [test]=$test_dir)
dnn_train=train                      # the set the DNNs train on (and their priors come from)
if [ -n "$speed_perturb" ]; then     # train_sp: speed-perturbed copies + originals, features, tri1 alignments
  sets="train train_sp dev test"; set_dir[train_sp]=${train_dir}_sp; dnn_train=train_sp
fi
lang=$data/lang
lang_test=$data/lang_test_bg
arpa=${lm:-$data/local/lm_bg.arpa}   # --lm FILE: decode with that ARPA LM instead of training one
[ -z "$lm" ] || [ -f "$lm" ] || { echo "$0: --lm $lm: no such ARPA file" >&2; exit 1; }
mfcc=$data/mfcc                      # $mfcc/<set>: MFCC + deltas, CMN (GMM input)
fbank=$data/fbank                    # $fbank/<set>: 40 log-mel, CMN (DNN input)
fbank_step=fbank                     # marker prefix: another CMVN is another feature store and marker
if [ "$dnn_cmvn" != speaker ]; then fbank=$data/fbank_$dnn_cmvn; fbank_step=fbank_$dnn_cmvn; fi
gmm_exp=${gmm_exp:-$exp}
mono=$gmm_exp/mono
tri1=$gmm_exp/tri1
ali=$gmm_exp/tri1_ali                # ${ali}, ${ali}_dev, ${ali}_test: pdf alignments = DNN labels
graph=$tri1/graph_bg
tri1_ali=$ali                        # tri1's alignments (tri2 trains on them)
label_gmm=$tri1                      # the GMM whose tree the DNN outputs follow (its final.mdl and
label_graph=$graph                   # graph decode them)
. "$(dirname "${BASH_SOURCE[0]}")/gmm_sat.sh"   # --gmm-stage tri3 / --dnn-input fmllr: tri2, tri3 paths and steps
dnn=$exp/dnn                         # baseline: one model of the students' architecture
ensemble=$exp/dnn_ensemble           # member_<i>/ + ensemble.json; combine_{arith,geo}/ for its scores
teacher_cache_dir=$ensemble/cache_$combination  # teacher_cache=true: geo once; arith ${..}_T<T> per T
regularizer=$exp/regularizer         # paper §6 (only when regularizer_fraction > 0)
report=$exp/report
log_dir=$exp/log
done_dir=$exp/.done

ali_of() { local base=${2:-$ali}; if [ "$1" = train ]; then echo "$base"; else echo "${base}_$1"; fi; }
dnn_feats=$fbank/$dnn_train
dnn_ali=$(ali_of $dnn_train)
model_size=(--set model.hidden_layers=$hidden_layers --set model.hidden_dim=$hidden_dim
            --set max_epochs=$max_epochs --set device=$device --set seed=$seed)
student_layers=${student_layers:-$hidden_layers}; student_hidden_dim=${student_hidden_dim:-$hidden_dim}
student_suffix=""                    # a student smaller (or larger) than the members: size in its dir names
if [ "$student_layers x $student_hidden_dim" != "$hidden_layers x $hidden_dim" ]; then
  student_suffix=_${student_layers}x$student_hidden_dim
fi
student_size=(--set student.model.hidden_layers=$student_layers --set student.model.hidden_dim=$student_hidden_dim
              --set student.max_epochs=$max_epochs --set student.device=$device --set student.seed=$seed)
hard_twin=$exp/dnn$student_suffix    # the student's size trained on hard labels alone (= $dnn when same size)
deploy=$exp/deploy$student_suffix    # package/ of the dev-chosen student, eval_<backend>_test.json
member_seed=$((100 * (seed - 1) + 2))  # members' seeds: member_seed, member_seed + 1, ...
soft_terms="{soft_ce: 1.0, hard_ce: $hard_weight}"
nnet_device=$device; [ "$device" = auto ] && nnet_device=$("$python" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')
job_opts=(--nj "$nj"); [ -n "$dask_scheduler" ] && job_opts+=(--dask-scheduler "$dask_scheduler")
decode_opts=(--lm-weights "$lm_weights" --word-penalties "$word_penalties" --beam "$beam" --max-active "$max_active"
             "${job_opts[@]}")
[ -z "$score_map" ] || decode_opts+=(--score-map "$score_map")
members=(); for ((i = 0; i < num_members; i++)); do members+=("$ensemble/member_$i"); done

# ------------------------------------------------------------------ helpers
. "$(dirname "${BASH_SOURCE[0]}")/parallel_steps.sh"  # in_parallel, wait_parallel
kd() { "$python" -m asr_kd "$@"; }

in_stage() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }

steps() { "$python" -m asr_kd.steps "$@"; }
step_alias=(--alias "exp=$exp" --alias "gmm_exp=$gmm_exp" --alias "data=$data")  # markers survive a moved exp dir

# lock_exp: take $exp/.lock for this run.sh (a second run on the same exp dir is refused, naming
# this one's PID and command); released on exit. A lock left by a killed run is taken over.
lock_exp() {
  mkdir -p "$exp"
  steps lock "$exp/.lock" --pid $$ || exit 1
  trap 'steps unlock "$exp/.lock" --pid '$$ EXIT
}

# run_step NAME OUT CMD...: run CMD unless its marker says it finished with the same fingerprint.
# OUT (may be empty) is removed before a (re)run. A changed fingerprint is said in one line and
# runs CMD with ASR_KD_OVERWRITE=1, so an asr-kd command replaces the old output it finds.
# Optional `step_io` (an array set by the caller): --derived/--extra paths for the fingerprint.
run_step() {
  local name=$1 out=$2; shift 2
  mkdir -p "$log_dir" "$done_dir"
  local outs=(); [ -n "$out" ] && outs=(--out "$out")
  local state
  state=$(steps begin "$done_dir/$name" "${outs[@]}" "${step_alias[@]}" ${step_io[@]+"${step_io[@]}"} -- "$@") || exit 1
  local overwrite=
  case $state in
    done) echo "  [done] $name"; return 0 ;;
    redo*) echo "  [redo] $name: ${state#redo: }"; overwrite=1 ;;
  esac
  [ -n "$out" ] && rm -rf "$out"
  echo "  [run ] $name"
  local t0=$SECONDS
  if ! ASR_KD_PARENT_PID=$BASHPID ASR_KD_OVERWRITE=$overwrite "$@" >"$log_dir/$name.log" 2>&1; then
    echo "$0: step $name failed; last lines of $log_dir/$name.log:" >&2
    tail -n 20 "$log_dir/$name.log" >&2
    exit 1
  fi
  steps finish "$done_dir/$name" "$((SECONDS - t0))" || exit 1
}

# step NAME CMD...: run_step without an output dir to clean (the command resumes or replaces it).
step() { local name=$1; shift; run_step "$name" "" "$@"; }

# fresh_step NAME OUT CMD...: like step, but first removes OUT left by an interrupted or replaced run.
fresh_step() { run_step "$@"; }

# eval_dnn NAME DIR COMBINE MODELS...: frame accuracy and CE on dev and test into DIR/eval_<set>.json.
eval_dnn() {
  local name=$1 dir=$2 combine=$3; shift 3
  for set in dev test; do
    fresh_step "eval_${name}_$set" "$dir/eval_$set.json" \
      kd eval-frames "$@" "$fbank/$set" "$(ali_of $set)" --combine "$combine" --device "$nnet_device" \
        --out "$dir/eval_$set.json"
  done
}

# decode_dnn NAME DIR COMBINE MODELS...: frame metrics, log-likelihoods and dev-tuned decoding of
# one DNN system into DIR (eval_<set>.json; decode_test/ with tuning.json = dev WER per scale).
decode_dnn() {
  local name=$1 dir=$2 combine=$3; shift 3
  eval_dnn "$name" "$dir" "$combine" "$@"
  local decode=(kd decode "$label_graph" "$label_gmm" "$dir/decode_test" --loglikes "$dir/loglikes_test" --text "$test_dir/text"
                --dev-loglikes "$dir/loglikes_dev" --dev-text "$dev_dir/text" "${decode_opts[@]}")
  # the decode marker covers the chain models -> loglikes (deleted after decoding) -> decode
  local step_io=(--derived "$dir/loglikes_dev" --derived "$dir/loglikes_test" --extra "$fbank/dev" --extra "$fbank/test"
                 --extra "$dnn_ali"); for m in "$@"; do step_io+=(--extra "$m"); done
  if [ "$(steps check "$done_dir/decode_${name}_test" --out "$dir/decode_test" "${step_alias[@]}" "${step_io[@]}" \
        -- "${decode[@]}")" = done ]; then
    echo "  [done] decode_${name}_test"; return 0
  fi
  for set in dev test; do  # log-likelihood stores (deleted after decoding): rebuilt for a re-decode
    [ -d "$dir/loglikes_$set" ] || rm -f "$done_dir/loglikes_${name}_$set"
    fresh_step "loglikes_${name}_$set" "$dir/loglikes_$set" \
      kd compute-loglikes "$@" "$fbank/$set" "$dnn_ali" "$dir/loglikes_$set" --combine "$combine" \
        --device "$nnet_device" --dtype float16
  done
  fresh_step "decode_${name}_test" "$dir/decode_test" "${decode[@]}"
  if [ "$keep_loglikes" != true ]; then
    rm -rf "$dir/loglikes_dev" "$dir/loglikes_test"
  fi
}

# distill_at T: the teacher cache at T (if cached) and the student distilled at T.
distill_at() {
  local t=$1 teacher=(--teacher "$ensemble" --combination "$combination")
  if [ "$teacher_cache" = true ]; then  # the ensemble runs once per T (arith) or once for every T (geo)
    local cache=$teacher_cache_dir; [ "$combination" = arith ] && cache=${teacher_cache_dir}_T$t
    fresh_step "cache_teacher_$(basename "$cache")" "$cache" kd cache-teacher "$ensemble" --feats "$dnn_feats" \
      --out "$cache" --combination "$combination" --temperature "$t" --device "$nnet_device"
    teacher=(--teacher-cache "$cache")
  fi
  step distill_T$t$student_suffix kd distill --config "$distill_conf" "${student_size[@]}" "${teacher[@]}" \
    --set loss.temperature=$t --set "loss.terms=$soft_terms" \
    "$dnn_feats" "$dnn_ali" "$fbank/dev" "${ali}_dev" "$exp/student_T$t$student_suffix"
}

# ------------------------------------------------------------------ stages 1-9
hybrid_kd_stages() {
  if in_stage 1; then
    echo "stage 1: lang, LM (${lm:-${lm_order}-gram on the training text}), lang_test"
    fresh_step prepare_lang "$lang" kd prepare-lang "$dict_dir" "$lang"
    if [ -z "$lm" ]; then
      step train_lm kd train-lm --order "$lm_order" --lang-dir "$lang" "$train_dir/text" "$arpa"
    fi
    fresh_step make_lang_test "$lang_test" kd make-lang-test "$lang" "$arpa" "$lang_test"
  fi

  if in_stage 2; then
    echo "stage 2: features (MFCC for the GMM, fbank for the DNN)"
    if [ -n "$speed_perturb" ]; then
      fresh_step perturb_speed "${set_dir[train_sp]}" kd perturb-speed "$train_dir" "${set_dir[train_sp]}" --factors $speed_perturb
    fi
    for set in $sets; do
      step mfcc_$set kd compute-features --config "$mfcc_conf" "${job_opts[@]}" "${set_dir[$set]}" "$mfcc/$set"
      [ "$dnn_input" = fmllr ] || step ${fbank_step}_$set kd compute-features --config "$fbank_conf" \
        --set cmvn.per=$dnn_cmvn "${job_opts[@]}" "${set_dir[$set]}" "$fbank/$set"
    done
  fi

  if in_stage 3; then
    echo "stage 3: monophone GMM, alignment of train, graph, GMM decoding"
    fresh_step train_mono "$mono" kd train-mono "${job_opts[@]}" --num-utts "$mono_num_utts" --tot-gauss "$mono_tot_gauss" \
      "$mfcc/train" "$train_dir" "$lang" "$mono"
    fresh_step align_mono "${mono}_ali" kd align "${job_opts[@]}" "$mfcc/train" "$train_dir" "$lang" "$mono" "${mono}_ali"
    fresh_step make_graph_mono "$mono/graph_bg" kd make-graph "$lang_test" "$mono" "$mono/graph_bg"
    fresh_step decode_mono_test "$mono/decode_test" kd decode "$mono/graph_bg" "$mono" "$mono/decode_test" \
      --feats "$mfcc/test" --text "$test_dir/text" --dev-feats "$mfcc/dev" --dev-text "$dev_dir/text" \
      "${decode_opts[@]}"
  fi

  if in_stage 4; then
    echo "stage 4: triphone GMM (tri1), alignments of every set, graph, GMM decoding"
    fresh_step train_tri1 "$tri1" kd train-tri "${job_opts[@]}" --num-leaves "$num_leaves" --tot-gauss "$tot_gauss" --num-utts "$tri_num_utts" \
      "$mfcc/train" "$train_dir" "$lang" "${mono}_ali" "$tri1"
    for set in $sets; do
      fresh_step align_tri1_$set "$(ali_of $set "$tri1_ali")" kd align "${job_opts[@]}" "$mfcc/$set" "${set_dir[$set]}" "$lang" "$tri1" "$(ali_of $set "$tri1_ali")"
    done
    fresh_step make_graph "$graph" kd make-graph "$lang_test" "$tri1" "$graph"
    fresh_step decode_tri1_test "$tri1/decode_test" kd decode "$graph" "$tri1" "$tri1/decode_test" \
      --feats "$mfcc/test" --text "$test_dir/text" --dev-feats "$mfcc/dev" --dev-text "$dev_dir/text" \
      "${decode_opts[@]}"
    [ "$gmm_stage" = tri1 ] || sat_steps
  fi

  if in_stage 5; then
    echo "stage 5: baseline DNN (${hidden_layers} x ${hidden_dim})"
    in_parallel step train_dnn kd train --config "$dnn_conf" "${model_size[@]}" \
      "$dnn_feats" "$dnn_ali" "$fbank/dev" "${ali}_dev" "$dnn"
  fi

  if in_stage 6; then
    echo "stage 6: ensemble of $num_members DNNs (seeds $member_seed..$((member_seed + num_members - 1)))"
    in_parallel step train_ensemble kd train-ensemble --config "$dnn_conf" "${model_size[@]}" --set seed=$member_seed \
      --k "$num_members" "$dnn_feats" "$dnn_ali" "$fbank/dev" "${ali}_dev" "$ensemble"
  fi
  wait_parallel

  if in_stage 7; then
    echo "stage 7: distillation, one student per temperature ($temperatures), teacher $combination"
    for t in $temperatures; do in_parallel distill_at "$t"; done
    wait_parallel
    if [ -n "$student_suffix" ]; then  # the same size on hard labels alone: what distillation is compared with
      step train_dnn$student_suffix kd train --config "$dnn_conf" "${model_size[@]}" \
        --set model.hidden_layers=$student_layers --set model.hidden_dim=$student_hidden_dim \
        "$dnn_feats" "$dnn_ali" "$fbank/dev" "${ali}_dev" "$hard_twin"
    fi
    if [ "$regularizer_fraction" != 0 ]; then
      step regularizer kd regularizer --config "$distill_conf" "${student_size[@]}" \
        --set student.max_epochs=$regularizer_epochs --set student.min_epochs=$((regularizer_epochs / 3)) \
        --set "loss.terms={soft_ce: 1.0}" --teacher "$ensemble" --combination "$combination" \
        --fraction "$regularizer_fraction" --baseline "$dnn" "$dnn_feats" "$dnn_ali" "$fbank/dev" "${ali}_dev" \
        "$fbank/test" "${ali}_test" "$regularizer"
    fi
  fi

  if in_stage 8; then
    echo "stage 8: DNN frame metrics and decoding (acoustic scale tuned on dev)"
    decode_dnn dnn "$dnn" arith "$dnn"
    for ((i = 0; i < num_members; i++)); do  # members past --decode-members: frame metrics only
      if [ "$i" -lt "$decode_members" ]; then
        decode_dnn member_$i "${members[$i]}" arith "${members[$i]}"
      else
        eval_dnn member_$i "${members[$i]}" arith "${members[$i]}"
      fi
    done
    for c in arith geo; do
      decode_dnn ensemble_$c "$ensemble/combine_$c" $c "$ensemble"
    done
    if [ -n "$student_suffix" ]; then decode_dnn dnn$student_suffix "$hard_twin" arith "$hard_twin"; fi
    students=()
    for t in $temperatures; do
      decode_dnn student_T$t$student_suffix "$exp/student_T$t$student_suffix" arith "$exp/student_T$t$student_suffix"
      students+=("$exp/student_T$t$student_suffix")
    done
    if [ "$package" = true ] && [ "$dnn_input" = fmllr ]; then
      echo "  [skip] package: a model on fMLLR features needs per-speaker transforms, which transcribe does not estimate"
    elif [ "$package" = true ]; then  # the dev-chosen student as a product: package, fp32 and int8 on test
      fresh_step package$student_suffix "$deploy/package" kd package "${students[@]}" --graph "$label_graph" --feats "$dnn_feats" \
        --ali "$dnn_ali" --lang "$lang_test" --out "$deploy/package"
      for backend in torch int8; do
        fresh_step eval_package${student_suffix}_$backend "$deploy/eval_${backend}_test.json" kd eval-package "$deploy/package" \
          "$fbank/test" "${ali}_test" --text "$test_dir/text" --backend $backend --out "$deploy/eval_${backend}_test.json"
      done
    fi
  fi

  if in_stage 9; then
    echo "stage 9: report"
    kd report "$exp" --out "$report" --corpus "$(basename "$PWD")"  # always regenerated: cheap; the recipe dir names the corpus
    echo "results: $report/RESULTS.md"
  fi
}

lock_exp  # one run.sh per exp dir, from here (stage 0 of the corpus runs next) to exit
