#!/usr/bin/env bash
# Stops what ./startup.sh started, by the PIDs it recorded in .run/pids, and the controllers
# whose PID files are in the cluster's data_dir (src/runtime/pid-file.ts: one restarted by hand
# too), and only those: controllers first (SIGTERM, then SIGKILL after 10 s), then the memcached
# processes startup.sh started. A PID is signalled only while it is still the process that was
# started (same start time, see scripts/pid-record.sh): PIDs get reused.
set -euo pipefail
cd "$(dirname "$0")"
pid_file=".run/pids"
# shellcheck source=scripts/pid-record.sh
source scripts/pid-record.sh

# Every process to stop: .run/pids, then the PID files in the data_dir startup.sh recorded, each PID once.
listed() {
  local data_dir=""
  [ -f .run/data_dir ] && read -r data_dir < .run/data_dir
  { [ -f "$pid_file" ] && cat "$pid_file"; [ -n "$data_dir" ] && controllers_by_pid_file "$data_dir"; } | awk '!seen[$2]++'
}

if [ -z "$(listed)" ]; then
  echo "mckv is not running (no $pid_file, no controller PID file)"
  exit 0
fi

stop_kind() {
  local kind=$1 pids=() starts=() index
  while read -r k pid start id; do
    [ "$k" = "$kind" ] || continue
    if ours "$pid" "$start"; then
      kill -TERM "$pid" 2>/dev/null && pids+=("$pid") && starts+=("$start") && echo "stopping $kind $id (pid $pid)"
    elif [[ "$pid" =~ ^[1-9][0-9]*$ ]] && [ -e "/proc/$pid" ]; then
      echo "left pid $pid alone: it is no longer the $kind $id that startup.sh started (another start time)"
    fi
  done < <(listed)
  for _ in $(seq 100); do
    local left=0
    for index in "${!pids[@]}"; do ours "${pids[$index]}" "${starts[$index]}" && left=1; done
    [ "$left" = 0 ] && return 0
    sleep 0.1
  done
  for index in "${!pids[@]}"; do
    ours "${pids[$index]}" "${starts[$index]}" && kill -KILL "${pids[$index]}" 2>/dev/null && echo "pid ${pids[$index]} did not stop in 10 s; killed"
  done
  return 0
}

stop_kind controller
stop_kind memcached
if [ -f "$pid_file" ] && grep -q '^compose ' "$pid_file"; then
  echo "stopping the memcached containers (docker compose down)"
  docker compose down >/dev/null 2>&1 || echo "docker compose down failed; see 'docker compose ps'"
fi
rm -f "$pid_file"
echo "mckv stopped"
