#!/usr/bin/env bash
# Manual end-to-end check of sluice-watcher against a real Kafka and Redis (needs kcat, redis-cli).
#
#   scripts/testenv run -- services/watcher/manual-test.sh build/bin/sluice-watcher
# or, with a Kafka and Redis of your own:
#   SLUICE_KAFKA_BROKERS=127.0.0.1:9092 SLUICE_REDIS_URL=redis://127.0.0.1:6379/0 \
#     services/watcher/manual-test.sh build/bin/sluice-watcher
#
# Each run uses a fresh flow name, so old messages on the topic and old cursors never count.
set -euo pipefail

BIN=$(realpath "${1:?usage: manual-test.sh PATH/TO/sluice-watcher}")
: "${SLUICE_KAFKA_BROKERS:?set SLUICE_KAFKA_BROKERS (or run under scripts/testenv)}"
: "${SLUICE_REDIS_URL:?set SLUICE_REDIS_URL (or run under scripts/testenv)}"
command -v kcat >/dev/null || { echo "kcat is needed (apt-get install kcat)" >&2; exit 2; }
command -v redis-cli >/dev/null || { echo "redis-cli is needed" >&2; exit 2; }

TOPIC=sluice.runs.requested
FLOW=wtest_$(date +%s)_$$
TMP=$(mktemp -d "${TMPDIR:-/tmp}/watcher-test.XXXXXX")
WPID=
FAILS=0

cleanup() {
	[[ -z $WPID ]] || { kill -TERM "$WPID" 2>/dev/null; wait "$WPID" 2>/dev/null || true; }
	if ((FAILS)); then
		echo "logs kept in $TMP" >&2
	else
		rm -rf -- "$TMP"
	fi
}
trap cleanup EXIT

ok() { echo "ok   - $*"; }
fail() {
	echo "FAIL - $*"
	FAILS=$((FAILS + 1))
}

# requests: the number of distinct idempotency keys of this run's flow on the topic.
requests() {
	kcat -C -b "$SLUICE_KAFKA_BROKERS" -t "$TOPIC" -o beginning -e -q -f '%s\n' 2>/dev/null |
		{ grep -ao "$FLOW:sha256:[0-9a-f]\{64\}" || true; } | sort -u | wc -l
}

# messages: the number of messages (not keys) of this run's flow on the topic.
messages() {
	kcat -C -b "$SLUICE_KAFKA_BROKERS" -t "$TOPIC" -o beginning -e -q -f '%s\n' 2>/dev/null |
		{ grep -ao "$FLOW:sha256:[0-9a-f]\{64\}" || true; } | wc -l
}

# expect N WHAT [KEYS]: waits up to 20 s for N messages, then checks there are no more for
# 3 s and that they carry KEYS (default N) distinct idempotency keys.
expect() {
	local want=$1 what=$2 keys=${3:-$1} got i
	for ((i = 0; i < 40; i++)); do
		got=$(messages)
		((got >= want)) && break
		sleep 0.5
	done
	sleep 3
	got=$(messages)
	if ((got == want)) && (($(requests) == keys)); then ok "$what ($got request(s))"; else
		fail "$what: want $want request(s) with $keys key(s), got $got with $(requests)"; fi
}

redis_cli() {
	local hostport=${SLUICE_REDIS_URL#redis://} db=0
	[[ $hostport == */* ]] && { db=${hostport#*/}; hostport=${hostport%%/*}; }
	redis-cli -h "${hostport%:*}" -p "${hostport##*:}" -n "${db:-0}" "$@"
}

start_watcher() {
	"$BIN" --flows-dir "$TMP/flows" --base-dir "$TMP/base" --log-level debug "$@" \
		>>"$TMP/watcher.log" 2>&1 &
	WPID=$!
	for ((i = 0; i < 100; i++)); do
		grep -q '"watcher started' "$TMP/watcher.log" 2>/dev/null && return 0
		sleep 0.2
	done
	fail "watcher did not start (log: $TMP/watcher.log)"
	exit 1
}

stop_watcher() {
	local rc=0
	kill -TERM "$WPID"
	wait "$WPID" || rc=$?
	WPID=
	((rc == 0)) && ok "SIGTERM: exit status 0" || fail "SIGTERM: exit status $rc"
}

# drop NAME CONTENT: the atomic way, written under a hidden temporary name then renamed.
drop() {
	printf '%s\n' "$2" >"$TMP/base/inbox/.$1.tmp"
	mv "$TMP/base/inbox/.$1.tmp" "$TMP/base/inbox/$1"
}

mkdir -p "$TMP/flows" "$TMP/base"
cat >"$TMP/flows/watch.yaml" <<EOF
flow: $FLOW
params:
  path: {type: string}
  size: {type: int}
  sha256: {type: string}
  name: {type: string}
trigger:
  files:
    dir: inbox
    glob: "*.csv"
tasks:
  show:
    command: [wc, -c, "\${params.path}"]
EOF
printf 'flow: [unclosed\n' >"$TMP/flows/broken.yaml"

echo "# flow $FLOW, temp dir $TMP"
start_watcher
[[ -d $TMP/base/inbox ]] && ok "missing trigger dir created" || fail "trigger dir not created"
grep -q 'broken.yaml' "$TMP/watcher.log" && ok "bad flow file logged and skipped" ||
	fail "bad flow file not reported"

drop a.csv "1,2,3"
drop b.csv "4,5,6"
drop c.csv "7,8,9"
expect 3 "three files dropped -> three RunRequests"

cp "$TMP/base/inbox/a.csv" "$TMP/base/inbox/.copy.tmp"
mv "$TMP/base/inbox/.copy.tmp" "$TMP/base/inbox/a-copy.csv"
expect 3 "byte-identical copy under another name -> no new request"
grep -q 'duplicate content, no new run.*a-copy.csv' "$TMP/watcher.log" &&
	ok "duplicate logged" || fail "duplicate not logged"

echo hidden >"$TMP/base/inbox/.hidden.csv"
echo temp >"$TMP/base/inbox/d.csv.tmp"
echo part >"$TMP/base/inbox/e.csv.part"
echo other >"$TMP/base/inbox/notes.txt"
printf 'target\n' >"$TMP/target.csv"
ln -s "$TMP/target.csv" "$TMP/base/inbox/link.csv"
mv "$TMP/target.csv" "$TMP/base/inbox/.moved-away" 2>/dev/null || true
ln -s "$TMP/base/inbox/.moved-away" "$TMP/base/inbox/link2.csv"
mkfifo "$TMP/base/inbox/fifo.csv"
mkdir "$TMP/base/inbox/dir.csv"
kill -HUP "$WPID" # a reload rescans, which reports the non-regular names
expect 3 "hidden, temporary, non-matching, symlink, fifo, directory -> no request"
for n in link.csv link2.csv fifo.csv dir.csv; do
	grep -q "$n skipped" "$TMP/watcher.log" && ok "$n reported as skipped" ||
		fail "$n not reported"
done

[[ $(redis_cli HLEN "sluice:watch:$FLOW") == 3 ]] && ok "3 cursors recorded" ||
	fail "cursor count $(redis_cli HLEN "sluice:watch:$FLOW") != 3"

stop_watcher
drop f.csv "dropped while the watcher was down"
start_watcher
expect 4 "restart: only the file dropped while down is new"
stop_watcher

# Polling mode, for file systems without inotify.
start_watcher --scan-interval 300ms
drop g.csv "polled"
printf 'written in place, slowly' >"$TMP/base/inbox/h.csv"
expect 6 "polling mode sees new files, no duplicates"

# A deleted cursor field + SIGHUP makes the watcher publish again, with the same
# idempotency key (the planner still maps it to the first run unless its key is gone too).
sha=$(sha256sum "$TMP/base/inbox/b.csv" | cut -d' ' -f1)
redis_cli HDEL "sluice:watch:$FLOW" "$sha" >/dev/null
kill -HUP "$WPID"
expect 7 "cursor deleted + SIGHUP -> requested again, same idempotency key" 6
stop_watcher

if ((FAILS)); then
	echo "$FAILS check(s) failed"
	exit 1
fi
echo "all checks passed"
