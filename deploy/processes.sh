# shellcheck shell=bash
# Stopping the processes a script started, by their pids, shared by deploy/local.sh,
# deploy/compose-test.sh and tests/e2e/run.sh. Sourced, not run: the caller defines `say`.

# stop_pids SECONDS PIDS NAMES: sends TERM to every pid of the array named PIDS (the last
# started first), then waits up to SECONDS for each, sends KILL to one still running, and reaps
# it when it is our child. NAMES is the array of their names, for the message.
stop_pids() {
  local limit=$1 i pid
  local -n _stop_pids=$2 _stop_names=$3
  for ((i = ${#_stop_pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${_stop_pids[i]}" 2>/dev/null || true
  done
  for ((i = ${#_stop_pids[@]} - 1; i >= 0; i--)); do
    pid=${_stop_pids[i]}
    for _ in $(seq $((limit * 10))); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      say "${_stop_names[i]} (pid $pid) did not stop within $limit s of TERM; sending KILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
}
