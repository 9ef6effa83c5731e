#!/usr/bin/env bash
# Standalone Apache ZooKeeper for ktrigger's broker-discovery tests.
#
#   zk.sh start [PORT]  fetch the jars (once, through Maven), start a fresh server with an empty
#                       data dir on 127.0.0.1:PORT (a free port if none given), wait until it
#                       answers; the last line printed is the connect string (host:port)
#   zk.sh status        print the connect string and exit 0 if our server runs, else exit 1
#   zk.sh stop          stop the server we started (by its pid), remove its state dir
#   zk.sh fetch         only fetch the jars
#
# State lives in $KT_ZK_DIR (default /tmp/ktrigger-zk-$UID): pid, address, zoo.cfg, data, zk.log.
# Jars are copied to integration-tests/zookeeper/libs (git-ignored) from ~/.m2.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
state=${KT_ZK_DIR:-/tmp/ktrigger-zk-$(id -u)}
start_timeout=${KT_ZK_START_TIMEOUT:-60}
svc=zk.sh main_class=ZooKeeperServerMain addr_file=address
# shellcheck source=../jvm-service.sh
. "$here/../jvm-service.sh"

# The four-letter "srvr" says "Mode: standalone" once the server serves requests ("ruok" answers
# "imok" as soon as the process listens, even if the server failed to start).
serves() {
  python3 - "$1" <<'PY' 2>/dev/null
import socket, sys
s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=1)
s.sendall(b'srvr')
data = b''
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
sys.exit(0 if b'Mode: standalone' in data else 1)
PY
}

start() {
  if running; then
    echo "zk.sh: already running" >&2
    cat "$state/address"
    return 0
  fi
  command -v java >/dev/null || die "java not found: run scripts/install-deps"
  fetch_jars
  local port=${1:-}
  [ -n "$port" ] || port=$(free_port)
  rm -rf "$state"
  mkdir -p "$state/data"
  cat >"$state/zoo.cfg" <<CFG
tickTime=2000
dataDir=$state/data
clientPort=$port
clientPortAddress=127.0.0.1
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=srvr
CFG
  # setsid: the server must not die with the shell that started it, nor get its signals.
  setsid java -Xms32m -Xmx256m -Djava.awt.headless=true \
    -Dorg.slf4j.simpleLogger.defaultLogLevel=info -Dorg.slf4j.simpleLogger.showDateTime=true \
    -Dzookeeper.admin.enableServer=false -cp "$libs/*" \
    org.apache.zookeeper.server.ZooKeeperServerMain "$state/zoo.cfg" \
    >"$state/zk.log" 2>&1 </dev/null &
  echo $! >"$state/pid"

  local deadline=$((SECONDS + start_timeout))
  until serves "$port"; do
    running || die "server exited during start-up: $(tail -n 20 "$state/zk.log")"
    if [ $SECONDS -ge $deadline ]; then
      stop >/dev/null 2>&1 || true
      die "server did not serve within ${start_timeout}s: $(tail -n 20 "$state/zk.log")"
    fi
    sleep 0.2
  done
  echo "127.0.0.1:$port" >"$state/address"
  echo "zk.sh: server pid $(cat "$state/pid"), data $state/data, log $state/zk.log" >&2
  echo "127.0.0.1:$port"
}

case "${1:-}" in
  start) start "${2:-}" ;;
  stop) stop 100 ;;
  status) status ;;
  fetch) fetch_jars ;;
  *) echo "usage: $0 start [PORT]|stop|status|fetch" >&2; exit 2 ;;
esac
