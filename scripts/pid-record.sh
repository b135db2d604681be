# Sourced by startup.sh and stop.sh: the processes startup.sh started, one line each in
# $pid_file, "KIND PID START ID" (START: field 22 of /proc/PID/stat, the process's start time in
# clock ticks after boot; "-" when there is no process to record, as for docker compose).
#
# A recorded PID is trusted only while /proc/PID/stat still shows that exact start time: a PID
# reused by another process has another start time. The command line is never consulted: any
# process can call itself main.ts. The file is input from disk: a line that does not parse is
# never trusted.

# start_time PID: prints the start time of process PID; fails if there is none.
start_time() {
  local stat fields
  [[ "$1" =~ ^[1-9][0-9]*$ ]] || return 1
  { read -r stat < "/proc/$1/stat"; } 2>/dev/null || return 1
  stat=${stat##*') '} # past the command name, which may hold spaces and parentheses
  read -r -a fields <<< "$stat"
  [[ "${fields[19]:-}" =~ ^[0-9]+$ ]] || return 1 # fields[0] is field 3
  printf '%s\n' "${fields[19]}"
}

# ours PID START: is PID still the process that started at START?
ours() {
  local now
  [[ "$2" =~ ^[0-9]+$ ]] || return 1
  now=$(start_time "$1") || return 1
  [ "$now" = "$2" ]
}

# controllers_by_pid_file DATA_DIR: the controllers named by PID files in DATA_DIR/<node>/controller.pid
# (src/runtime/pid-file.ts), as .run/pids lines, "controller PID START NODE".
controllers_by_pid_file() {
  local file pid start
  for file in "$1"/*/controller.pid; do
    [ -f "$file" ] || continue
    read -r pid start < "$file" || continue
    printf 'controller %s %s %s\n' "$pid" "$start" "$(basename "$(dirname "$file")")"
  done
}

# record_pid KIND PID ID: appends the line for a process just started in the background.
record_pid() {
  local start
  start=$(start_time "$2") || start=- # already gone: nothing to trust later
  echo "$1 $2 $start $3" >> "$pid_file"
}
