#!/usr/bin/env bash
# A local, single-node Apache Kafka (KRaft, combined broker+controller) for Tidewater's
# demo and tests, run as a plain Java process: no Docker.
#
#   scripts/kafka.sh start    resolve the broker jars (once), format storage (once), start,
#                             and wait until the broker answers metadata requests (one
#                             probe JVM asks until it does; see scripts/kafka/Ready.java)
#   scripts/kafka.sh stop     stop the broker this script started
#   scripts/kafka.sh status   exit 0 when the broker is up and answering
#   scripts/kafka.sh reset    stop, then delete the broker's data (topics, offsets)
#   scripts/kafka.sh logs     print the path of the broker's log file
#   scripts/kafka.sh data-dir print the path of the broker's data (one folder per
#                             partition, <topic>-<partition>, holding its log segments)
#   scripts/kafka.sh open-transactions TOPIC   transactions open on TOPIC's partitions
#                             (what holds its read_committed readers back)
#   scripts/kafka.sh txn-coordinator PREFIX     "<node> <id>" for each transactional id
#                             that starts with PREFIX
#
# Environment (all optional):
#   TW_KAFKA_PORT        client port on 127.0.0.1                       (default 19092)
#   TW_KAFKA_CONTROLLER_PORT  KRaft controller port                     (default port+1)
#   TW_KAFKA_HOME        cache and state folder, outside the repo
#                        (default ${XDG_CACHE_HOME:-$HOME/.cache}/tidewater/kafka)
#   TW_KAFKA_HEAP        JVM heap                                       (default 1G)
#   TW_KAFKA_GC          g1: G1 with a 20 ms pause goal, as Kafka's docs recommend
#                        (default); zgc: no stop-the-world young collections, a
#                        flatter latency tail for a little more broker CPU (BENCHMARKS.md)
#   TW_KAFKA_START_TIMEOUT  seconds to wait for readiness (asked in 10 s slices, the
#                        broker's process checked between them)         (default 120)
#   TW_KAFKA_NODES       3 (or more) for a replicated local cluster; its commands are
#                        listed by `TW_KAFKA_NODES=3 scripts/kafka.sh help`
#   TW_KAFKA_SECURITY    1: a secured broker (TLS, SASL, ACLs) on ports 29192-29195
#                        with its own state; see scripts/kafka/secure.sh  (default 0)
#
# The broker's jars come from Maven Central through scripts/kafka/pom.xml
# (org.apache.kafka:kafka_2.13 plus a log4j2 binding) into $TW_KAFKA_HOME/libs-<version>.
# The Java helpers in scripts/kafka/ are compiled once (javac) into
# $TW_KAFKA_HOME/classes-<version>, again after an edit; without javac they run from source.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Secured mode (TW_KAFKA_SECURITY=1): TLS, SASL, ACLs; see scripts/kafka/secure.sh.
secure="${TW_KAFKA_SECURITY:-0}"
if [[ $secure == 1 ]]; then source "$here/kafka/secure.sh"; secure_defaults; fi
pom="$here/kafka/pom.xml"
port="${TW_KAFKA_PORT:-19092}"
cport="${TW_KAFKA_CONTROLLER_PORT:-$((port + 1))}"
home="${TW_KAFKA_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/tidewater/kafka}"
heap="${TW_KAFKA_HEAP:-1G}"
gc="${TW_KAFKA_GC:-g1}"
timeout="${TW_KAFKA_START_TIMEOUT:-120}"
version="$(sed -n 's#.*<kafka.version>\(.*\)</kafka.version>.*#\1#p' "$pom" | head -n1)"
libs="$home/libs-$version"
state="$home/broker-$port"
data="$state/data"
conf="$state/server.properties"
log4j="$state/log4j2.properties"
logfile="$state/logs/server.log"
stdout_log="$state/logs/stdout.log"
pidfile="$state/broker.pid"

say() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
case "$gc" in g1 | zgc) ;; *) die "TW_KAFKA_GC must be g1 or zgc, not '$gc'" ;; esac

need() { command -v "$1" >/dev/null 2>&1 || die "$1 is required ($2)"; }

resolve_jars() {
  if [[ -f "$libs/.complete" ]]; then return 0; fi
  need mvn "Maven resolves the Kafka broker jars from Maven Central"
  need java "Kafka $version needs Java 17 or newer"
  say "resolving Apache Kafka $version from Maven Central into $libs (first run only)"
  rm -rf "$libs.tmp"
  mkdir -p "$libs.tmp" "$state/logs"
  if ! mvn -B -q -f "$pom" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$libs.tmp" >"$state/logs/mvn.log" 2>&1; then
    tail -n 30 "$state/logs/mvn.log" >&2 || true
    die "Maven could not resolve Apache Kafka $version (full log: $state/logs/mvn.log)"
  fi
  ls "$libs.tmp"/kafka_2.13-*.jar >/dev/null 2>&1 || die "kafka_2.13 jar missing after resolution"
  rm -rf "$libs"
  mv "$libs.tmp" "$libs"
  touch "$libs/.complete"
}

write_config() {
  mkdir -p "$data" "$state/logs"
  cat >"$conf" <<EOF
# Written by scripts/kafka.sh; edits are overwritten on the next start.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$data
num.partitions=1
default.replication.factor=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# A single node has no other replica to hand its partitions' leadership to: a controlled
# shutdown only leaves them without a leader, and the transaction coordinator skips the
# commit or abort marker of a partition without a leader (as if it were deleted). Stopped
# during a commit, the broker then keeps that partition's part of the transaction open
# after its restart, or lets the producer's next marker decide it. Without controlled
# shutdown, pending markers are written once the broker is back, except in the second or
# two when the restarted controller fences the node's previous registration
# (RELIABILITY.md, "Known limits").
controlled.shutdown.enable=false
# Consumer groups on the KIP-848 protocol (as Tidewater's schedulers use): detect a dead
# member within 10 s instead of the default 45 s.
group.consumer.session.timeout.ms=10000
group.consumer.min.session.timeout.ms=6000
group.consumer.heartbeat.interval.ms=1000
group.consumer.min.heartbeat.interval.ms=500
log.retention.hours=24
log.segment.bytes=67108864
num.network.threads=2
num.io.threads=4
EOF
  write_log4j "$log4j" "$logfile"
}

# Writes a log4j2 configuration ($1) that logs to $2, rolled at 50 MB.
write_log4j() {
  cat >"$1" <<EOF
status = warn
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = $2
appender.file.filePattern = $2.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 50MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
logger.state.name = state.change.logger
logger.state.level = warn
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = warn
EOF
}

java_opts() {
  printf '%s\n' "-Xms256m" "-Xmx$heap"
  case "$gc" in
    g1) printf '%s\n' "-XX:+UseG1GC" "-XX:MaxGCPauseMillis=20" "-XX:InitiatingHeapOccupancyPercent=35" ;;
    zgc) printf '%s\n' "-XX:+UseZGC" ;;
  esac
  printf '%s\n' "-Djava.awt.headless=true" \
    "-Dlog4j2.configurationFile=$log4j" "-Dkafka.logs.dir=$state/logs"
}

format_storage() {
  if [[ -f "$data/meta.properties" ]]; then return 0; fi
  local id
  id="$(java -cp "$libs/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)"
  [[ -n "$id" ]] || die "could not generate a cluster id"
  say "formatting KRaft storage in $data (cluster id $id)"
  mapfile -t opts < <(java_opts)
  java "${opts[@]}" -cp "$libs/*" kafka.tools.StorageTool format -t "$id" -c "$conf" \
    ${format_extra[@]+"${format_extra[@]}"} >"$state/logs/format.log" 2>&1 || { cat "$state/logs/format.log" >&2; die "storage format failed"; }
}

pid_alive() {
  [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

# The Java helpers in scripts/kafka/ (Ready, Where, SecureAdmin), compiled once with
# javac, instead of being compiled again by every single-file source launch (a javac
# inside each JVM, seconds of CPU on a busy machine): into
# $home/classes-<version>/NAME-<checksum of NAME.java>, so an edit compiles anew. Each is
# compiled into a temporary folder renamed into place, so runs for different ports in
# parallel never see a half-written one. tool_cp[NAME] is that folder, or empty when
# javac is missing or fails (then the helper runs from source, as before).
declare -A tool_cp=()
tool_compile() {
  local name="$1" src="$here/kafka/$1.java" base="$home/classes-$version" sum dir tmp
  [[ -v "tool_cp[$name]" ]] && return 0
  tool_cp[$name]=""
  [[ -f "$libs/.complete" ]] || return 0
  sum="$(cksum <"$src" | cut -d' ' -f1)" || return 0
  dir="$base/$name-$sum"
  if [[ ! -f "$dir/$name.class" ]]; then
    command -v javac >/dev/null 2>&1 || return 0
    mkdir -p "$base" 2>/dev/null && tmp="$(mktemp -d "$dir.tmp.XXXXXX" 2>/dev/null)" || return 0
    if ! javac --release 17 -nowarn -cp "$libs/*" -d "$tmp" "$src" >"$tmp.log" 2>&1; then
      say "javac could not compile $name.java (see $dir.log); running it from source"
      mv -f "$tmp.log" "$dir.log" 2>/dev/null || true
      rm -rf "$tmp" "$tmp.log"
      return 0
    fi
    rm -f "$tmp.log"
    # A parallel run may have renamed its own copy into place first: keep that one.
    mv -T "$tmp" "$dir" 2>/dev/null || rm -rf "$tmp"
    rm -f "$dir.log"
    [[ -f "$dir/$name.class" ]] || return 0
  fi
  tool_cp[$name]="$dir"
}

# Runs the helper scripts/kafka/$1.java with the broker's jars and the remaining
# arguments: its compiled class (a small, quick JVM), or its source when it has none.
kafka_tool() {
  local name="$1"
  shift
  tool_compile "$name"
  if [[ -n "${tool_cp[$name]}" ]]; then
    java -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -cp "${tool_cp[$name]}:$libs/*" "$name" "$@"
  else
    java -cp "$libs/*" "$here/kafka/$name.java" "$@"
  fi
}

# A real metadata request through Kafka's own Java client (scripts/kafka/Ready.java):
# succeeds when the broker answers and lists itself. With $1, keeps asking inside one JVM
# for up to $1 seconds.
ready_check() {
  tool_compile Ready # outside the redirection: says so when javac fails
  kafka_tool Ready "127.0.0.1:$port" ${1:+--wait "$1"} >/dev/null 2>&1
}

# Readiness is awaited in slices of this many seconds, one JVM each, so a broker that
# dies meanwhile is noticed between slices.
ready_slice=10

# Seconds for the next slice of a wait that started at $1 (date +%s) and ends
# $timeout seconds later: at most ready_slice, at least 1.
ready_budget() {
  local left=$(( timeout - ($(date +%s) - $1) ))
  (( left > ready_slice )) && left=$ready_slice
  (( left < 1 )) && left=1
  echo "$left"
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
}

cmd_status() {
  if pid_alive && [[ -f "$libs/.complete" ]] && ready_check; then
    say "up: 127.0.0.1:$port (pid $(cat "$pidfile"), log $logfile)"
    return 0
  fi
  say "down: 127.0.0.1:$port"
  return 1
}

cmd_start() {
  if pid_alive; then
    # Ours, and still starting (or busy): wait for it rather than start a second one.
    resolve_jars
    local since
    since=$(date +%s)
    until ready_check "$(ready_budget "$since")"; do
      pid_alive || break
      if (( $(date +%s) - since > timeout )); then
        die "broker (pid $(cat "$pidfile")) is running but not ready after ${timeout}s (logs: $state/logs)"
      fi
    done
    if pid_alive; then
      say "already running on 127.0.0.1:$port (pid $(cat "$pidfile"))"
      echo "127.0.0.1:$port"
      return 0
    fi
  fi
  if port_open; then
    die "127.0.0.1:$port is in use by a process this script did not start; set TW_KAFKA_PORT"
  fi
  resolve_jars
  write_config
  format_storage
  mapfile -t opts < <(java_opts)
  : >"$stdout_log"
  local started_at
  started_at=$(date +%s)
  say "starting Apache Kafka $version on 127.0.0.1:$port"
  nohup java "${opts[@]}" -cp "$libs/*" kafka.Kafka "$conf" >"$stdout_log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  while true; do
    if ! pid_alive; then
      tail -n 40 "$stdout_log" "$logfile" >&2 2>/dev/null || true
      die "broker exited during start (logs: $state/logs)"
    fi
    if grep -q "Kafka Server started" "$logfile" 2>/dev/null; then
      # One JVM asks until the broker answers, for a slice at most.
      if ready_check "$(ready_budget "$started_at")"; then break; fi
      pid_alive || continue
    else
      sleep 0.5
    fi
    if (( $(date +%s) - started_at > timeout )); then
      cmd_stop || true
      die "broker not ready after ${timeout}s (logs: $state/logs)"
    fi
  done
  say "ready in $(( $(date +%s) - started_at ))s: 127.0.0.1:$port (log $logfile)"
  echo "127.0.0.1:$port"
}

cmd_stop() {
  if ! pid_alive; then
    rm -f "$pidfile"
    say "not running"
    return 0
  fi
  local pid
  pid="$(cat "$pidfile")"
  say "stopping broker (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; say "stopped"; return 0; }
    sleep 0.5
  done
  say "broker did not stop in 30s; killing it"
  kill -KILL "$pid" 2>/dev/null || true
  # Gone before returning, so a start right after finds its port free.
  for _ in $(seq 1 20); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  rm -f "$pidfile"
}

if (( ${TW_KAFKA_NODES:-1} > 1 )); then
  # shellcheck source=kafka/cluster.sh
  source "$here/kafka/cluster.sh"
  cluster_main "$@"
  exit $?
fi

if [[ $secure == 1 ]]; then
  secure_install
  if secure_handles "${1:-}"; then secure_command "$@"; exit; fi
fi

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  reset) cmd_stop; rm -rf "$data"; say "data deleted: $data" ;;
  logs) echo "$logfile" ;;
  data-dir) echo "$data" ;;
  open-transactions)
    kafka_tool Where "127.0.0.1:$port" open-transactions "${2:?topic}" ;;
  txn-coordinator)
    kafka_tool Where "127.0.0.1:$port" txn-coordinator "${2:?transactional id prefix}" ;;
  *) sed -n '2,35p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
