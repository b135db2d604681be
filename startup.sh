#!/usr/bin/env bash
# Starts the three mckv controllers of config.ini in the background.
#
#   ./startup.sh [-cons linearizability|sequential|causal|eventual] [-c config.ini] [--memory]
#
# Each controller fronts the memcached of its [node.*] section. Where those do not answer, it starts
# local memcached processes if the `memcached` binary is installed, else docker-compose.yml's
# containers if a Docker engine answers, else uses the embedded in-memory store, and says which. It waits until every controller answers, records the PIDs it started in
# .run/pids for ./stop.sh, with each one's start time (scripts/pid-record.sh), and prints where the logs are.
# The controllers run compiled (node --no-memory-reducer dist/main.js: src/runtime/node-flags.ts says why): it installs the locked dependencies (npm ci) if
# they are missing, and builds (npm run build) when dist/ is missing or older than the sources.
set -euo pipefail
cd "$(dirname "$0")"

mode=""
config="config.ini"
force_memory=0
while [ $# -gt 0 ]; do
  case "$1" in
    -cons|--cons) mode="${2:?-cons needs a mode}"; shift 2 ;;
    -c|--config) config="${2:?-c needs a file}"; shift 2 ;;
    --memory) force_memory=1; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "startup.sh: unknown argument '$1' (see ./startup.sh --help)" >&2; exit 1 ;;
  esac
done
case "$mode" in
  ""|linearizability|sequential|causal|eventual) ;;
  *) echo "startup.sh: unknown consistency mode '$mode' (expected linearizability, sequential, causal, eventual)" >&2; exit 1 ;;
esac
[ -f "$config" ] || { echo "startup.sh: no config file $config" >&2; exit 1; }

run_dir=".run"
pid_file="$run_dir/pids"
mkdir -p -m 700 "$run_dir"
# shellcheck source=scripts/pid-record.sh
source scripts/pid-record.sh

# config.ini's data_dir (relative to the config's folder), where each running controller keeps
# its PID file (src/runtime/pid-file.ts), however it was started; stop.sh reads it from .run/data_dir.
data_dir=$(awk -F= '/^[ \t]*data_dir[ \t]*=/ { v = $2; gsub(/[ \t]/, "", v); sub(/;.*/, "", v); print v }' "$config")
data_dir="${data_dir:-data}"
case "$data_dir" in /*) ;; *) data_dir="$(cd "$(dirname "$config")" && pwd)/$data_dir" ;; esac

# node id, client host:port, memcached host:port — one line per [node.*] section.
nodes=$(awk '
  /^\[node\./ { if (id != "") print id, client, mc; id = substr($0, 7); sub(/\].*/, "", id); client = ""; mc = ""; next }
  /^\[/ { if (id != "") print id, client, mc; id = ""; next }
  id != "" && /^[ \t]*client[ \t]*=/ { v = $0; sub(/^[^=]*=[ \t]*/, "", v); sub(/[ \t;].*/, "", v); client = v }
  id != "" && /^[ \t]*memcached[ \t]*=/ { v = $0; sub(/^[^=]*=[ \t]*/, "", v); sub(/[ \t;].*/, "", v); mc = v }
  END { if (id != "") print id, client, mc }
' "$config")

answers() { # host port: does something speaking memcached answer there?
  local reply
  reply=$( { exec 3<>"/dev/tcp/$1/$2" && printf 'version\r\n' >&3 && timeout 2 head -c 7 <&3; } 2>/dev/null) || return 1
  [ "$reply" = "VERSION" ]
}

# start_memcached ID HOST:PORT: a local memcached for node ID, in the background, its PID recorded.
start_memcached() {
  local run_as=() out="$log_dir/memcached-$1.out"
  if [ "$(id -u)" = 0 ]; then # memcached refuses root without -u; it is given no root either
    if id -u memcache >/dev/null 2>&1; then run_as=(-u memcache); else run_as=(-u nobody); fi
  fi
  (umask 077 && rm -f "$out" && exec nohup memcached -l "${2%:*}" -p "${2##*:}" -U 0 -M -o hot_lru_pct=70,warm_lru_pct=10 -m 1024 -I 2m "${run_as[@]}" >"$out" 2>&1) &
  record_pid memcached $! "$1"
}

log_dir=$(awk -F= '/^[ \t]*log_dir[ \t]*=/ { v = $2; gsub(/[ \t]/, "", v); sub(/;.*/, "", v); print v }' "$config")
log_dir="${log_dir:-logs}"
mkdir -p -m 700 "$log_dir"

running=""
if [ -f "$pid_file" ]; then
  while read -r kind pid start _; do
    if ours "$pid" "$start"; then running="$running $kind:$pid"; fi
  done < "$pid_file"
fi
while read -r _ pid start _; do
  if ours "$pid" "$start" && [[ "$running" != *":$pid"* ]]; then running="$running controller:$pid"; fi
done < <(controllers_by_pid_file "$data_dir")
if [ -n "$running" ]; then
  # A local memcached this script started that has since died (killed, out of memory) is started
  # again, empty, as before: its controller refuses requests while it is down, and rebuilds the
  # replica from its peers once it answers.
  if [ -f "$pid_file" ] && grep -q '^memcached ' "$pid_file"; then
    records=$(cat "$pid_file")
    : > "$pid_file"
    while read -r kind pid start id; do
      mc=$(awk -v id="$id" '$1 == id { print $3 }' <<< "$nodes")
      if [ "$kind" = memcached ] && ! ours "$pid" "$start" && [ -n "$mc" ] && ! answers "${mc%:*}" "${mc##*:}"; then
        start_memcached "$id" "$mc"
        echo "memcached of $id ($mc) was not running: started it again, empty; its controller rebuilds the replica from its peers"
      else
        echo "$kind $pid $start $id" >> "$pid_file"
      fi
    done <<< "$records"
  fi
  echo "mckv is already running (pids$running); ./stop.sh stops it"
  exit 0
fi
rm -f "$pid_file"
printf '%s\n' "$data_dir" > "$run_dir/data_dir"

if ! command -v node >/dev/null; then
  echo "startup.sh: Node.js is not installed (apt-get install -y nodejs npm)" >&2; exit 1
fi
node scripts/require-node.mjs || exit 1
if [ ! -x node_modules/.bin/tsc ]; then
  echo "installing dependencies (npm ci)..."
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
fi

[ -n "$nodes" ] || { echo "startup.sh: no [node.*] sections in $config" >&2; exit 1; }

# Build when dist/ is missing or anything it is compiled from is newer. tsc rewrites only the files
# that changed, so dist/main.js is touched to mark the build.
if [ ! -f dist/main.js ] || [ -n "$(find main.ts src scripts/require-node.mjs tsconfig.json tsconfig.build.json package-lock.json -newer dist/main.js -print -quit)" ]; then
  echo "building (npm run build)..."
  npm run build --silent || { echo "startup.sh: the build failed (npm run build)" >&2; exit 1; }
  touch dist/main.js
fi

wait_for_memcached() { # tries: until every node's memcached answers, 0.2 s apart
  local ok
  for _ in $(seq "$1"); do
    ok=1
    while read -r id client mc; do answers "${mc%:*}" "${mc##*:}" || ok=0; done <<< "$nodes"
    [ "$ok" = 1 ] && return 0
    sleep 0.2
  done
}

serving() { # host port: does a controller answer a read (a leader is elected, the replica caught up)?
  local reply
  reply=$( { exec 3<>"/dev/tcp/$1/$2" && printf 'get mckv-startup-probe\r\n' >&3 && timeout 2 head -c 3 <&3; } 2>/dev/null) || return 1
  [ "$reply" = "END" ]
}

# The cluster secret peers prove they hold (config.ini's secret_file, relative to the config's folder).
secret_file=$(awk -F= '/^[ \t]*secret_file[ \t]*=/ { v = $2; gsub(/[ \t]/, "", v); sub(/;.*/, "", v); print v }' "$config")
secret_file="${secret_file:-cluster.secret}"
case "$secret_file" in /*) ;; *) secret_file="$(dirname "$config")/$secret_file" ;; esac
if [ ! -e "$secret_file" ]; then
  (umask 077 && head -c 32 /dev/urandom | base64 > "$secret_file")
  echo "created the cluster secret $secret_file (random, readable by you only); every controller of this config reads it"
fi

kvtype=memcache
backend_note=""
if [ "$force_memory" = 1 ]; then
  kvtype=memory
  backend_note="the embedded in-memory store (--memory)"
else
  missing=""
  while read -r id client mc; do
    answers "${mc%:*}" "${mc##*:}" || missing="$missing $id:$mc"
  done <<< "$nodes"
  if [ -z "$missing" ]; then
    backend_note="the memcached servers of $config"
  elif command -v memcached >/dev/null; then
    while read -r id client mc; do
      answers "${mc%:*}" "${mc##*:}" || start_memcached "$id" "$mc"
    done <<< "$nodes"
    backend_note="local memcached processes started for$missing"
    wait_for_memcached 50
  elif [ "$config" = config.ini ] && command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    docker compose up -d >"$log_dir/docker-compose.out" 2>&1
    echo "compose - - docker-compose.yml" >> "$pid_file"
    backend_note="memcached containers of docker-compose.yml (docker compose up -d)"
    wait_for_memcached 100
  else
    kvtype=memory
    backend_note="the embedded in-memory store (no memcached answers at$missing, and neither the memcached binary nor a Docker engine is here)"
  fi
fi

mode_flag=()
[ -n "$mode" ] && mode_flag=(-cons "$mode")
while read -r id client mc; do
  out="$log_dir/$id.out"
  (umask 077 && rm -f "$out" && exec nohup node --no-memory-reducer dist/main.js -c "$config" -p "${client##*:}" --kvtype "$kvtype" "${mode_flag[@]}" \
    >"$out" 2>&1) &
  record_pid controller $! "$id"
done <<< "$nodes"

deadline=$((SECONDS + 60))
while read -r id client mc; do
  pid="" start=""
  read -r pid start < <(awk -v id="$id" '$1 == "controller" && $4 == id { print $2, $3 }' "$pid_file") || true
  until serving "${client%:*}" "${client##*:}"; do
    if ! ours "$pid" "$start" || [ $SECONDS -ge $deadline ]; then
      echo "startup.sh: controller $id did not start; its output ($log_dir/$id.out):" >&2
      tail -n 20 "$log_dir/$id.out" >&2 || true
      ./stop.sh >/dev/null 2>&1 || true
      exit 1
    fi
    sleep 0.2
  done
done <<< "$nodes"

echo "mckv is running, mode ${mode:-from $config}, on $backend_note."
while read -r id client mc; do
  echo "  $id: clients at $client, replica $([ "$kvtype" = memory ] && echo "in memory" || echo "memcached $mc")"
done <<< "$nodes"
http=$(awk '/^\[node\./ { node = 1 } /^\[cluster/ { node = 0 } node && /^[ \t]*http[ \t]*=/ { v = $0; sub(/^[^=]*=[ \t]*/, "", v); sub(/[ \t;].*/, "", v); printf "%shttp://%s/", sep, v; sep = " " }' "$config")
[ -n "$http" ] && echo "status pages, /metrics and health checks (/readyz, /livez): $http"
echo "logs: $log_dir/<node>.log (JSON lines) and $log_dir/<node>.out (console)"
first_client=$(head -n 1 <<< "$nodes" | awk '{ print $2 }')
echo "try:  npx mckv -cli -i ${first_client%:*} -p ${first_client##*:}    stop: ./stop.sh"
echo "restart one controller by hand: npx mckv -c $config -p PORT${mode:+ -cons $mode} (peers refuse one in another mode)"
