# Helpers shared by the sluice scripts (sourced, never run): messages, pid files, processes, ports.
# shellcheck shell=bash

SLUICE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
SLUICE_SCRIPTS=$SLUICE_ROOT/scripts

# Progress and errors go to stderr; stdout is reserved for each script's result line.
log() { printf '%s: %s\n' "${PROG:-sluice}" "$*" >&2; }
die() {
	printf '%s: error: %s\n' "${PROG:-sluice}" "$*" >&2
	exit 1
}

# need_cmd NAME HINT: fail with HINT when NAME is not on PATH.
need_cmd() {
	command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH${2:+ ($2)}"
}

# abs_dir DIR: create DIR if needed and print its absolute path.
abs_dir() {
	mkdir -p -- "$1" || die "cannot create directory $1"
	(cd -- "$1" && pwd -P)
}

# pid_alive PID: true if PID is a live process (a zombie counts as dead).
pid_alive() {
	local stat
	[[ $1 =~ ^[0-9]+$ ]] || return 1
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	[[ ${stat:0:1} != Z ]]
}

# pid_matches PID WORD: true if PID is alive and its command line contains WORD,
# so a pid file left behind never makes us signal an unrelated process.
pid_matches() {
	local cmd
	pid_alive "$1" || return 1
	cmd=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
	[[ $cmd == *"$2"* ]]
}

# read_pidfile FILE: print the pid stored in FILE; false if absent or garbled.
read_pidfile() {
	local pid=
	[[ -f $1 ]] || return 1
	read -r pid <"$1" || true
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	printf '%s\n' "$pid"
}

# pidfile_running FILE WORD: print the pid in FILE if that process runs and matches WORD.
pidfile_running() {
	local pid
	pid=$(read_pidfile "$1") || return 1
	pid_matches "$pid" "$2" || return 1
	printf '%s\n' "$pid"
}

# wait_gone PID SECONDS: true once PID has exited, false if it outlives SECONDS.
wait_gone() {
	local i
	for ((i = 0; i < $2 * 10; i++)); do
		pid_alive "$1" || return 0
		sleep 0.1
	done
	! pid_alive "$1"
}

# stop_pid PID WORD SECONDS NAME: SIGTERM, wait SECONDS, then SIGKILL. Only signals
# PID if it still matches WORD. False if the process would not die.
stop_pid() {
	local pid=$1 word=$2 timeout=$3 name=$4
	pid_matches "$pid" "$word" || return 0
	kill -TERM "$pid" 2>/dev/null || return 0
	wait_gone "$pid" "$timeout" && return 0
	log "$name (pid $pid) still running after ${timeout}s: sending SIGKILL"
	kill -KILL "$pid" 2>/dev/null || true
	wait_gone "$pid" 5 && return 0
	log "$name (pid $pid) survived SIGKILL"
	return 1
}

# stop_pidfile FILE WORD SECONDS NAME: stop_pid on the pid in FILE, then remove FILE.
stop_pidfile() {
	local pid
	if ! pid=$(read_pidfile "$1"); then
		rm -f -- "$1"
		return 0
	fi
	if pid_matches "$pid" "$2"; then
		log "stopping $4 (pid $pid)"
		stop_pid "$pid" "$2" "$3" "$4" || return 1
	fi
	rm -f -- "$1"
}

# spawn PIDFILE LOGFILE CMD...: run CMD in the background in its own session (a
# Ctrl-C aimed at the caller does not reach it), stdout+stderr appended to
# LOGFILE. The process writes its own pid before exec, so PIDFILE is exact.
spawn() {
	local pidfile=$1 logfile=$2 i
	shift 2
	rm -f -- "$pidfile"
	# shellcheck disable=SC2016 # $$ and $@ belong to the inner bash
	setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" \
		</dev/null >>"$logfile" 2>&1 &
	for ((i = 0; i < 100; i++)); do
		[[ -s $pidfile ]] && return 0
		sleep 0.05
	done
	die "could not start $1 (no pid file $pidfile; see $logfile)"
}

# port_open PORT: true if something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# free_ports N: print N distinct free loopback ports, one a line.
free_ports() {
	"$SLUICE_SCRIPTS/lib/freeport" "${1:-1}" || die "could not find a free port"
}

# log_tail FILE: show the last lines of FILE on stderr, indented.
log_tail() {
	[[ -f $1 ]] || return 0
	printf '%s: --- last lines of %s ---\n' "${PROG:-sluice}" "$1" >&2
	tail -n "${2:-30}" -- "$1" | sed 's/^/    /' >&2
}
