# Shared by kafka/kafka.sh and zookeeper/zk.sh (sourced, not run): one JVM service of the test
# harness, started in the background, known by its pid file, stopped by that pid only.
#
# The sourcing script sets: svc (name in messages, e.g. kafka.sh), here (its directory, with
# pom.xml), state (its state dir), main_class (to recognise its java process) and addr_file
# (the state file holding host:port once it serves).

libs=$here/libs

die() { echo "$svc: $*" >&2; exit 1; }

running() {
  [ -f "$state/pid" ] || return 1
  local pid
  pid=$(cat "$state/pid")
  kill -0 "$pid" 2>/dev/null || return 1
  # The pid must still be our java process, not a recycled pid.
  grep -q "$main_class" "/proc/$pid/cmdline" 2>/dev/null
}

fetch_jars() {
  # Fetched again when pom.xml changed since.
  local want
  want=$(sha256sum "$here/pom.xml" | cut -d' ' -f1)
  if [ -f "$libs/.complete" ] && [ "$(cat "$libs/.complete")" = "$want" ]; then return 0; fi
  command -v mvn >/dev/null || die "mvn not found: run scripts/install-deps"
  echo "$svc: fetching jars with Maven (cached in ~/.m2)" >&2
  rm -rf "$libs"
  mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies -DoutputDirectory="$libs" >&2 ||
    die "mvn dependency:copy-dependencies failed"
  echo "$want" >"$libs/.complete"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# SIGTERM our process (by its pid) and wait up to $1 tenths of a second, then SIGKILL it.
kill_service() {
  local pid i tenths=${1:-300}
  pid=$(cat "$state/pid")
  kill -TERM "$pid"
  for i in $(seq 1 "$tenths"); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  echo "$svc: pid $pid did not stop in $((tenths / 10)) s, killing it" >&2
  kill -KILL "$pid" 2>/dev/null || true
}

stop() {
  if ! running; then
    rm -rf "$state"
    echo "$svc: not running"
    return 0
  fi
  kill_service "$@"
  rm -rf "$state"
  echo "$svc: stopped"
}

status() {
  if running; then
    cat "$state/$addr_file" 2>/dev/null || die "running but not ready"
  else
    echo "$svc: not running" >&2
    return 1
  fi
}
