# Sourced by hybrid_kd.sh: independent steps side by side, at most $dnn_jobs at once.
# Independent DNN steps (the baseline next to the ensemble, one student per T) run at most $dnn_jobs
# at once, each single-threaded (OMP_NUM_THREADS=1), as Kaldi recipes run independent work with `&`
# and `wait`. in_parallel CMD...: run CMD (a step, or a function of steps) in the background;
# wait_parallel: wait for all of them, and stop the recipe if any failed (after the others end, so
# their finished outputs are kept). `kill -9` of run.sh runs no trap: each job's watcher ends the job
# when run.sh is gone, and the job's asr-kd child follows it (ASR_KD_PARENT_PID in run_step).
parallel_pids=(); parallel_failed=
in_parallel() {
  [ "${#parallel_pids[@]}" -lt "$dnn_jobs" ] || wait_oldest
  [ -z "$parallel_failed" ] || wait_parallel
  (
    job=$BASHPID
    { while kill -0 $$ 2>/dev/null; do sleep 1; done; kill -TERM "$job"; } &
    trap 'kill $! 2>/dev/null' EXIT
    "$@"
  ) &
  parallel_pids+=($!)
}
wait_oldest() {
  local pid=${parallel_pids[0]}; parallel_pids=("${parallel_pids[@]:1}")
  wait "$pid" || parallel_failed=1
}
wait_parallel() {
  while [ "${#parallel_pids[@]}" -gt 0 ]; do wait_oldest; done
  [ -z "$parallel_failed" ] || { echo "$0: a step run in parallel failed (its log is named above)" >&2; exit 1; }
}
