#!/usr/bin/env bash
# Stops what ./startup.sh started, by the PIDs it recorded in .run/pids, and only those:
# controllers first (SIGTERM, then SIGKILL after 10 s), then the memcached processes it started.
set -euo pipefail
cd "$(dirname "$0")"
pid_file=".run/pids"
if [ ! -f "$pid_file" ]; then
  echo "mckv is not running (no $pid_file)"
  exit 0
fi

# Only signal a PID that still runs the program we started (PIDs get reused).
ours() { # kind pid
  local cmdline
  cmdline=$( { tr '\0' ' ' < "/proc/$2/cmdline"; } 2>/dev/null) || return 1
  case "$1" in
    controller) [[ "$cmdline" == *main.ts* ]] ;;
    memcached) [[ "$cmdline" == *memcached* ]] ;;
    *) return 1 ;;
  esac
}

stop_kind() {
  local kind=$1 pids=()
  while read -r k pid id; do
    if [ "$k" = "$kind" ] && ours "$k" "$pid"; then
      kill -TERM "$pid" 2>/dev/null && pids+=("$pid") && echo "stopping $kind $id (pid $pid)"
    fi
  done < "$pid_file"
  for _ in $(seq 100); do
    local left=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && left=1; done
    [ "$left" = 0 ] && return 0
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null && echo "pid $pid did not stop in 10 s; killed"; done
  return 0
}

stop_kind controller
stop_kind memcached
if grep -q '^compose ' "$pid_file"; then
  echo "stopping the memcached containers (docker compose down)"
  docker compose down >/dev/null 2>&1 || echo "docker compose down failed; see 'docker compose ps'"
fi
rm -f "$pid_file"
echo "mckv stopped"
