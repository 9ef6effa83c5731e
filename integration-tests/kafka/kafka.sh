#!/usr/bin/env bash
# Single-node Apache Kafka (KRaft) for ktrigger's tests, demo and benchmarks.
#
#   kafka.sh start    fetch the jars (once, through Maven), format a fresh data dir, start the broker
#                     on 127.0.0.1 on a free port, wait until it serves (below); the last line printed
#                     is the bootstrap address (host:port)
#   kafka.sh status   print the bootstrap address and exit 0 if our broker runs, else exit 1
#   kafka.sh stop     stop the broker we started (by its pid), remove its data dir
#   kafka.sh pause    stop the broker but keep its data dir, config and port (a broker outage);
#                     first records which topics it has ($state/expected-topics)
#   kafka.sh resume   start the paused broker again on the same data and port, wait until it serves
#                     every topic recorded at pause
#
# "Serves" means a metadata answer naming this one broker in which every partition of every topic
# (__consumer_offsets included) has a leader and no error (../ktmetadata.py): answering metadata
# alone is not enough, right after a (re)start partitions are still leaderless and requests to
# them fail with NOT_LEADER_FOR_PARTITION. Polled as a condition, each try a real request; gives
# up after $KT_KAFKA_START_TIMEOUT s (default 60).
#
# State lives in $KT_KAFKA_DIR (default /tmp/ktrigger-kafka-$UID): pid, bootstrap, data, broker.log.
# Jars are copied to integration-tests/kafka/libs (git-ignored) from ~/.m2.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
state=${KT_KAFKA_DIR:-/tmp/ktrigger-kafka-$(id -u)}
start_timeout=${KT_KAFKA_START_TIMEOUT:-60}
svc=kafka.sh main_class=kafka.Kafka addr_file=bootstrap
# shellcheck source=../jvm-service.sh
. "$here/../jvm-service.sh"

start() {
  if running; then
    echo "kafka.sh: already running" >&2
    cat "$state/bootstrap"
    return 0
  fi
  command -v java >/dev/null || die "java not found: run scripts/install-deps"
  fetch_jars
  rm -rf "$state"
  mkdir -p "$state/data"
  local port cport
  port=$(free_port)
  cport=$(free_port)
  while [ "$cport" = "$port" ]; do cport=$(free_port); done

  cat >"$state/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$state/data
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.flush.interval.messages=9223372036854775807
EOF
  cat >"$state/log4j2.properties" <<EOF
rootLogger.level=WARN
rootLogger.appenderRef.file.ref=file
appender.file.type=File
appender.file.name=file
appender.file.fileName=$state/broker.log
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
logger.kafka.name=kafka
logger.kafka.level=INFO
EOF

  local cp="$libs/*"
  local jvm=(java -Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true
    "-Dlog4j2.configurationFile=$state/log4j2.properties" -cp "$cp")
  local cluster_id
  cluster_id=$("${jvm[@]}" kafka.tools.StorageTool random-uuid 2>>"$state/format.log" | tail -n 1)
  "${jvm[@]}" kafka.tools.StorageTool format -t "$cluster_id" -c "$state/server.properties" \
    >>"$state/format.log" 2>&1 || die "storage format failed: $(tail -n 5 "$state/format.log")"

  # setsid: the broker must not die with the shell that started it, and must not get its signals.
  setsid "${jvm[@]}" kafka.Kafka "$state/server.properties" >"$state/stdout.log" 2>&1 </dev/null &
  echo $! >"$state/pid"
  # resume uses the jars this broker started with: another checkout (a worktree, a fresh
  # clone reusing the running broker) may have none of its own.
  echo "$cp" >"$state/classpath"

  local bootstrap="127.0.0.1:$port"
  if ! wait_serving "$bootstrap" start; then
    stop >/dev/null 2>&1 || true
    exit 1
  fi
  echo "$bootstrap" >"$state/bootstrap"
  echo "kafka.sh: broker pid $(cat "$state/pid"), data $state/data, log $state/broker.log" >&2
  echo "$bootstrap"
}

# The metadata check (see the header); prints why not when the broker does not serve yet.
# $1: bootstrap, $2: optional file of {topic: partitions} that must all be back.
serving() {
  local md
  md=$(kcat -L -J -b "$1" -m 2 2>/dev/null) || {
    echo "no metadata from $1"
    return 1
  }
  python3 "$here/../ktmetadata.py" check ${2:+"$2"} <<<"$md"
}

# Wait until the broker at $1 serves (with $3: every topic in that file); $2 names the step.
# On failure: a message on stderr, return 1 (the broker is left as it is).
wait_serving() {
  local bootstrap=$1 step=$2 expected=${3:-} deadline=$((SECONDS + start_timeout)) why
  [ -z "$expected" ] || [ -f "$expected" ] || expected=
  while ! why=$(serving "$bootstrap" "$expected"); do
    if ! running; then
      echo "$svc: broker exited during $step: $(tail -n 20 "$state/stdout.log" "$state/broker.log" 2>/dev/null)" >&2
      return 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      echo "$svc: broker did not serve within ${start_timeout}s of $step: $why" >&2
      return 1
    fi
    sleep 0.2
  done
}

pause() {
  running || die "not running"
  # What resume must see again before it calls the broker back (a broker still loading its
  # metadata lists fewer topics). Without it resume checks only what it is shown.
  rm -f "$state/expected-topics"
  if kcat -L -J -b "$(cat "$state/bootstrap")" -m 5 2>/dev/null |
    python3 "$here/../ktmetadata.py" record >"$state/expected-topics.tmp"; then
    mv "$state/expected-topics.tmp" "$state/expected-topics"
  else
    rm -f "$state/expected-topics.tmp"
    echo "kafka.sh: no metadata before the pause: resume will not know which topics to wait for" >&2
  fi
  kill_service 300
  rm -f "$state/pid"
  echo "kafka.sh: paused (data kept in $state)"
}

resume() {
  running && die "already running"
  [ -f "$state/server.properties" ] && [ -f "$state/bootstrap" ] || die "nothing paused in $state"
  local cp="$libs/*" bootstrap
  [ -f "$state/classpath" ] && cp=$(cat "$state/classpath")
  bootstrap=$(cat "$state/bootstrap")
  setsid java -Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true \
    "-Dlog4j2.configurationFile=$state/log4j2.properties" -cp "$cp" \
    kafka.Kafka "$state/server.properties" >>"$state/stdout.log" 2>&1 </dev/null &
  echo $! >"$state/pid"
  wait_serving "$bootstrap" resume "$state/expected-topics" || exit 1
  echo "$bootstrap"
}

case "${1:-}" in
  start) start ;;
  stop) stop 300 ;;
  status) status ;;
  pause) pause ;;
  resume) resume ;;
  fetch) fetch_jars ;;
  *) echo "usage: $0 start|stop|status|pause|resume|fetch" >&2; exit 2 ;;
esac
