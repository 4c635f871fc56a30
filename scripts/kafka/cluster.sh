# Cluster mode of scripts/kafka.sh (TW_KAFKA_NODES=3): several combined KRaft
# controller+broker nodes on 127.0.0.1, replicated like a production cluster
# (replication factor 3, min.insync.replicas 2, replicated transaction log), with
# commands to fail one node at a time. Sourced by kafka.sh; uses its helpers.
#
#   TW_KAFKA_NODES=3 scripts/kafka.sh start          start every node, wait for all
#   TW_KAFKA_NODES=3 scripts/kafka.sh stop [N]       stop every node, or node N (SIGTERM)
#   TW_KAFKA_NODES=3 scripts/kafka.sh start N        start node N again, wait until it serves
#   TW_KAFKA_NODES=3 scripts/kafka.sh kill N         SIGKILL node N
#   TW_KAFKA_NODES=3 scripts/kafka.sh pause N        SIGSTOP node N (a frozen machine)
#   TW_KAFKA_NODES=3 scripts/kafka.sh resume N       SIGCONT node N
#   TW_KAFKA_NODES=3 scripts/kafka.sh status         which nodes run and answer
#   TW_KAFKA_NODES=3 scripts/kafka.sh reset          stop, then delete every node's data
#   TW_KAFKA_NODES=3 scripts/kafka.sh bootstrap      the bootstrap list for clients
#   TW_KAFKA_NODES=3 scripts/kafka.sh leader TOPIC PARTITION      node leading it
#   TW_KAFKA_NODES=3 scripts/kafka.sh txn-coordinator PREFIX      "<node> <id>" for each
#                                                    transactional id starting with PREFIX
#   TW_KAFKA_NODES=3 scripts/kafka.sh group-coordinator GROUP     node coordinating GROUP
#   TW_KAFKA_NODES=3 scripts/kafka.sh open-transactions TOPIC     transactions holding back
#                                                    read_committed readers of TOPIC
#   TW_KAFKA_NODES=3 scripts/kafka.sh under-replicated            partitions with a short ISR
#   TW_KAFKA_NODES=3 scripts/kafka.sh wait-replicated             until that is 0 (or timeout)
#   TW_KAFKA_NODES=3 scripts/kafka.sh logs N         path of node N's log
#
# Node N (1-based) listens for clients on TW_KAFKA_PORT+N-1 (default 19192, 19193,
# 19194) and for the controller quorum on that port + 100. Heap per node defaults to
# 512M (TW_KAFKA_HEAP), so three nodes fit beside a build on a 2-core, 24 GiB machine.

nodes="${TW_KAFKA_NODES}"
cbase="${TW_KAFKA_PORT:-19192}"
cheap="${TW_KAFKA_HEAP:-512M}"
cstate="$home/cluster-$cbase"
# Replication as in production, scaled down for fewer than three nodes.
crf=$((nodes < 3 ? nodes : 3))
cisr=$((nodes < 3 ? 1 : 2))

node_port() { echo $((cbase + $1 - 1)); }
node_cport() { echo $((cbase + 100 + $1 - 1)); }
node_dir() { echo "$cstate/node-$1"; }
node_pidfile() { echo "$(node_dir "$1")/broker.pid"; }
node_log() { echo "$(node_dir "$1")/logs/server.log"; }

cluster_bootstrap() {
  local i out=""
  for ((i = 1; i <= nodes; i++)); do out+="${out:+,}127.0.0.1:$(node_port "$i")"; done
  echo "$out"
}

check_node() {
  [[ "${1:-}" =~ ^[0-9]+$ ]] && (($1 >= 1 && $1 <= nodes)) || die "node must be 1..$nodes, not '${1:-}'"
}

node_alive() {
  local f
  f="$(node_pidfile "$1")"
  [[ -f "$f" ]] && kill -0 "$(cat "$f")" 2>/dev/null
}

write_node_config() {
  local i="$1" dir voters="" j
  dir="$(node_dir "$i")"
  mkdir -p "$dir/data" "$dir/logs"
  for ((j = 1; j <= nodes; j++)); do voters+="${voters:+,}$j@127.0.0.1:$(node_cport "$j")"; done
  {
    echo "# Written by scripts/kafka.sh (cluster mode); edits are overwritten on the next start."
    echo "process.roles=broker,controller"
    echo "node.id=$i"
    echo "controller.quorum.voters=$voters"
    echo "listeners=PLAINTEXT://127.0.0.1:$(node_port "$i"),CONTROLLER://127.0.0.1:$(node_cport "$i")"
    echo "advertised.listeners=PLAINTEXT://127.0.0.1:$(node_port "$i")"
    echo "controller.listener.names=CONTROLLER"
    echo "inter.broker.listener.name=PLAINTEXT"
    echo "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    echo "log.dirs=$dir/data"
    echo "num.partitions=1"
    echo "default.replication.factor=$crf"
    echo "min.insync.replicas=$cisr"
    echo "auto.create.topics.enable=false"
    echo "offsets.topic.replication.factor=$crf"
    echo "offsets.topic.num.partitions=4"
    echo "transaction.state.log.replication.factor=$crf"
    echo "transaction.state.log.min.isr=$cisr"
    echo "transaction.state.log.num.partitions=4"
    echo "share.coordinator.state.topic.replication.factor=$crf"
    echo "share.coordinator.state.topic.min.isr=$cisr"
    echo "group.initial.rebalance.delay.ms=0"
    echo "group.consumer.session.timeout.ms=10000"
    echo "group.consumer.min.session.timeout.ms=6000"
    echo "group.consumer.heartbeat.interval.ms=1000"
    echo "group.consumer.min.heartbeat.interval.ms=500"
    echo "replica.lag.time.max.ms=10000"
    echo "unclean.leader.election.enable=false"
    echo "log.retention.hours=24"
    echo "log.segment.bytes=67108864"
    echo "num.network.threads=2"
    echo "num.io.threads=2"
  } >"$dir/server.properties"
  write_log4j "$dir/log4j2.properties" "$dir/logs/server.log"
}

node_java_opts() {
  local dir
  dir="$(node_dir "$1")"
  printf '%s\n' "-Xms128m" "-Xmx$cheap" "-XX:+UseG1GC" "-XX:MaxGCPauseMillis=20" \
    "-XX:InitiatingHeapOccupancyPercent=35" "-XX:ActiveProcessorCount=2" \
    "-Djava.awt.headless=true" \
    "-Dlog4j2.configurationFile=$dir/log4j2.properties" "-Dkafka.logs.dir=$dir/logs"
}

format_cluster() {
  local id i dir
  mkdir -p "$cstate"
  if [[ ! -f "$cstate/cluster.id" ]]; then
    id="$(java -cp "$libs/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)"
    [[ -n "$id" ]] || die "could not generate a cluster id"
    echo "$id" >"$cstate/cluster.id"
  fi
  id="$(cat "$cstate/cluster.id")"
  for ((i = 1; i <= nodes; i++)); do
    dir="$(node_dir "$i")"
    [[ -f "$dir/data/meta.properties" ]] && continue
    say "formatting node $i's storage (cluster id $id)"
    mapfile -t opts < <(node_java_opts "$i")
    java "${opts[@]}" -cp "$libs/*" kafka.tools.StorageTool format -t "$id" -c "$dir/server.properties" \
      >"$dir/logs/format.log" 2>&1 || { cat "$dir/logs/format.log" >&2; die "node $i: storage format failed"; }
  done
}

# Starts node $1's JVM without waiting. Remembers where its log ended, so readiness is
# judged from this start's lines only.
launch_node() {
  local i="$1" dir
  dir="$(node_dir "$i")"
  if node_alive "$i"; then return 0; fi
  if (exec 3<>"/dev/tcp/127.0.0.1/$(node_port "$i")") 2>/dev/null; then
    die "127.0.0.1:$(node_port "$i") is in use by a process this script did not start; set TW_KAFKA_PORT"
  fi
  touch "$dir/logs/server.log"
  wc -c <"$dir/logs/server.log" >"$dir/log.offset"
  mapfile -t opts < <(node_java_opts "$i")
  nohup java "${opts[@]}" -cp "$libs/*" kafka.Kafka "$dir/server.properties" \
    >"$dir/logs/stdout.log" 2>&1 </dev/null &
  echo $! >"$(node_pidfile "$i")"
}

node_started() {
  local dir offset
  dir="$(node_dir "$1")"
  offset="$(cat "$dir/log.offset" 2>/dev/null || echo 0)"
  # grep reads to the end (no -q): with pipefail, a reader that quits early would fail
  # the pipeline through tail's SIGPIPE.
  tail -c "+$((offset + 1))" "$dir/logs/server.log" 2>/dev/null | grep "Kafka Server started" >/dev/null
}

# Waits until node $1 has started and answers a metadata request on its own port: once
# its log says it started, one JVM (scripts/kafka/Ready.java --wait) asks until it
# answers, for a slice of at most ready_slice seconds, and the node's process is checked
# between slices.
await_node() {
  local i="$1" started_at
  started_at=$(date +%s)
  tool_compile Ready
  while true; do
    if ! node_alive "$i"; then
      tail -n 30 "$(node_dir "$i")/logs/stdout.log" "$(node_log "$i")" >&2 2>/dev/null || true
      die "node $i exited during start"
    fi
    if node_started "$i"; then
      if kafka_tool Ready "127.0.0.1:$(node_port "$i")" --wait "$(ready_budget "$started_at")" \
          >/dev/null 2>"$(node_dir "$i")/ready.err"; then
        say "node $i ready in $(( $(date +%s) - started_at ))s: 127.0.0.1:$(node_port "$i")"
        return 0
      fi
    else
      sleep 0.5
    fi
    if (( $(date +%s) - started_at > timeout )); then
      if node_started "$i"; then
        # The node logged its start but did not answer: say what the probe last got.
        say "node $i logged its start; its last metadata request got: $(tail -n 3 "$(node_dir "$i")/ready.err" 2>/dev/null | tr '\n' ' ')"
      fi
      die "node $i not ready after ${timeout}s (log $(node_log "$i"))"
    fi
  done
}

where() {
  kafka_tool Where "$(cluster_bootstrap)" "$@"
}

signal_node() {
  local i="$1" sig="$2"
  check_node "$i"
  node_alive "$i" || die "node $i is not running"
  kill "-$sig" "$(cat "$(node_pidfile "$i")")"
  say "node $i: sent SIG$sig"
}

stop_node() {
  local i="$1" pid
  node_alive "$i" || { rm -f "$(node_pidfile "$i")"; return 0; }
  pid="$(cat "$(node_pidfile "$i")")"
  kill -CONT "$pid" 2>/dev/null || true
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$(node_pidfile "$i")"; say "node $i stopped"; return 0; }
    sleep 0.5
  done
  say "node $i did not stop in 30s; killing it"
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$(node_pidfile "$i")"
}

cluster_main() {
  local cmd="${1:-}" i
  case "$cmd" in
    start)
      resolve_jars
      if [[ -n "${2:-}" ]]; then
        check_node "$2"
        write_node_config "$2"
        launch_node "$2"
        await_node "$2"
        return 0
      fi
      for ((i = 1; i <= nodes; i++)); do write_node_config "$i"; done
      format_cluster
      say "starting $nodes Apache Kafka $version nodes on $(cluster_bootstrap)"
      for ((i = 1; i <= nodes; i++)); do launch_node "$i"; done
      for ((i = 1; i <= nodes; i++)); do await_node "$i"; done
      cluster_bootstrap
      ;;
    stop)
      if [[ -n "${2:-}" ]]; then check_node "$2"; stop_node "$2"; return 0; fi
      # All at once: the last node alone cannot finish a controlled shutdown without
      # its quorum, and would wait out the 30 s before being killed.
      for ((i = 1; i <= nodes; i++)); do stop_node "$i" & done
      wait
      ;;
    kill)
      local pid
      check_node "${2:-}"
      node_alive "$2" || die "node $2 is not running"
      pid="$(cat "$(node_pidfile "$2")")"
      signal_node "$2" KILL
      # Gone for good (its port free) before this returns, so a start can follow at once.
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$(node_port "$2")") 2>/dev/null || break
        sleep 0.1
      done
      rm -f "$(node_pidfile "$2")"
      ;;
    pause) signal_node "${2:-}" STOP ;;
    resume) signal_node "${2:-}" CONT ;;
    status)
      local up=0
      for ((i = 1; i <= nodes; i++)); do
        if node_alive "$i"; then
          say "node $i: running (pid $(cat "$(node_pidfile "$i")")) on 127.0.0.1:$(node_port "$i")"
          up=$((up + 1))
        else
          say "node $i: down"
        fi
      done
      ((up == nodes)) && [[ -f "$libs/.complete" ]] && where brokers >/dev/null 2>&1
      ;;
    reset)
      for ((i = 1; i <= nodes; i++)); do stop_node "$i"; done
      rm -rf "$cstate"
      say "data deleted: $cstate"
      ;;
    bootstrap) cluster_bootstrap ;;
    leader) where leader "${2:?topic}" "${3:?partition}" ;;
    txn-coordinator) where txn-coordinator "${2:?transactional id prefix}" ;;
    open-transactions) where open-transactions "${2:?topic}" ;;
    group-coordinator) where group-coordinator "${2:?group}" ;;
    under-replicated) where under-replicated ;;
    wait-replicated)
      local started_at short
      started_at=$(date +%s)
      while true; do
        short="$(where under-replicated 2>/dev/null || echo unknown)"
        if [[ "$short" == 0 ]]; then say "every partition fully replicated"; return 0; fi
        if (( $(date +%s) - started_at > timeout )); then
          die "still $short under-replicated partitions after ${timeout}s"
        fi
        sleep 1
      done
      ;;
    logs) check_node "${2:-}"; node_log "$2" ;;
    *) sed -n '1,27p' "$here/kafka/cluster.sh" | sed 's/^# \{0,1\}//'; return 2 ;;
  esac
}
