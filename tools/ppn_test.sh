#!/usr/bin/env bash
# tools/ppn's liveness checks are not fooled: a zombie or a pid file left behind pointing at
# another process is "stopped" (and `up` starts the service), a service being stopped is
# "stopping", and tools/ppn stays shellcheck-clean. Uses a fake ledger binary; no ports.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
T=$(mktemp -d "${TEST_TMPDIR:-/tmp}/ppn-test.XXXXXX")
export PPN_STATE=$T/state PPN_BIN=$T/bin
mkdir -p "$PPN_STATE/run" "$PPN_STATE/logs" "$PPN_BIN/ledger"
started=()
cleanup() {
  local p
  for p in "${started[@]}" "$(cat "$PPN_STATE/run/ledger.pid" 2>/dev/null || true)"; do
    if [ -n "$p" ]; then kill -KILL "$p" 2>/dev/null || true; fi
  done
  rm -rf "$T"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  exit 1
}
ledger_status() { "$ROOT/tools/ppn" status | grep '^ledger:'; }
expect_status() {
  local got
  got=$(ledger_status)
  [ "$got" = "$1" ] || fail "status said \"$got\", want \"$1\""
}
# start_service as `tools/ppn up` calls it, from the script's own functions.
start_ledger() {
  # shellcheck source=/dev/null  # tools/ppn is checked on its own below
  (source "$ROOT/tools/ppn" && start_service ledger 7101 "$PPN_BIN/ledger/ledger --db=$T/l.db")
}

# A fake ledger: writes its port file, then runs until SIGTERM, after which it takes a
# second to stop, as a draining service does.
cat >"$PPN_BIN/ledger/ledger" <<'FAKE'
#!/usr/bin/env bash
for a in "$@"; do case $a in --port_file=*) echo 7101 >"${a#--port_file=}" ;; esac; done
trap 'sleep 1; exit 0' TERM
while :; do sleep 0.1; done
FAKE
chmod +x "$PPN_BIN/ledger/ledger"

if command -v shellcheck >/dev/null; then
  (cd "$ROOT" && shellcheck -x tools/ppn tools/ppn_test.sh) || fail "shellcheck"
fi

expect_status "ledger: stopped"

# A zombie: a child that has exited and that its parent (here a sleep) never reaps, as a
# SIGKILLed service stays when nothing reaps it. kill -0 succeeds on it.
(
  sleep 0.1 &
  echo $! >"$T/zombie.pid"
  exec sleep 60
) &
started+=($!)
holder=$!
for _ in $(seq 1 50); do
  zombie=$(cat "$T/zombie.pid" 2>/dev/null || true)
  [ -n "$zombie" ] && [ "$(cut -d' ' -f3 "/proc/$zombie/stat" 2>/dev/null)" = Z ] && break
  sleep 0.1
done
[ "$(cut -d' ' -f3 "/proc/$zombie/stat")" = Z ] || fail "setup: no zombie"
kill -0 "$zombie" || fail "setup: kill -0 should succeed on a zombie"
echo "$zombie" >"$PPN_STATE/run/ledger.pid"
expect_status "ledger: stopped (stale pid file: pid $zombie is a zombie)"

# A pid file naming a live process that is not the service.
echo "$holder" >"$PPN_STATE/run/ledger.pid"
expect_status "ledger: stopped (stale pid file: pid $holder runs sleep)"

# A pid that has exited.
sleep 0.01 &
gone=$!
wait "$gone"
echo "$gone" >"$PPN_STATE/run/ledger.pid"
expect_status "ledger: stopped (stale pid file: pid $gone has exited)"

# `up` is not fooled by the zombie: it starts the service.
echo "$zombie" >"$PPN_STATE/run/ledger.pid"
out=$(start_ledger)
[[ $out == *"ledger started on 127.0.0.1:7101"* ]] || fail "up with a zombie pid file said: $out"
pid=$(cat "$PPN_STATE/run/ledger.pid")
[ "$pid" != "$zombie" ] || fail "the pid file still names the zombie"
expect_status "ledger: running, pid $pid, 127.0.0.1:7101"
out=$(start_ledger)
[[ $out == *"ledger already running (pid $pid)"* ]] || fail "up with the service running said: $out"

# While `down` waits for it to stop, it is stopping, not running.
"$ROOT/tools/ppn" down >"$T/down.out" &
down=$!
for _ in $(seq 1 50); do
  [ -f "$PPN_STATE/run/ledger.stopping" ] && break
  sleep 0.02
done
expect_status "ledger: stopping, pid $pid"
wait "$down" || fail "down failed: $(cat "$T/down.out")"
grep -qx "ledger: stopped" "$T/down.out" || fail "down said: $(cat "$T/down.out")"
expect_status "ledger: stopped"
[ ! -e "$PPN_STATE/run/ledger.pid" ] || fail "down left the pid file"
echo PASS
# tools/test counts test cases from Catch2's closing line; this script is one case.
echo "All tests passed (1 assertion in 1 test case)"
