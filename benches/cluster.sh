#!/usr/bin/env bash
# A local Apache Ballista cluster for development: one scheduler and two
# executors, as processes on localhost, over the lake of the configuration
# in the current directory (custlake.toml, CUSTLAKE__* variables, --lake).
#
#   benches/cluster.sh start [BIN]   start them (BIN: the custlake binary,
#                                     default: target/release/custlake)
#   benches/cluster.sh stop          stop them
#   benches/cluster.sh status        which are running
#
# Then run statements on it:
#   custlake sql --engine ballista --scheduler 127.0.0.1:50050 'SELECT ...'
# or serve with CUSTLAKE__SERVER__ENGINE=ballista
#   CUSTLAKE__SERVER__SCHEDULER_URL=127.0.0.1:50050 custlake serve
#
# Ports: CLUSTER_PORT (scheduler, default 50050); executor i (1, 2) listens
# on CLUSTER_PORT+2i-1 (Flight) and CLUSTER_PORT+2i (gRPC). Logs and pids
# are in CLUSTER_DIR (default .cluster/).
set -euo pipefail
port="${CLUSTER_PORT:-50050}"
dir="${CLUSTER_DIR:-.cluster}"
cmd="${1:-status}"
bin="${2:-target/release/custlake}"

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_port() {
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing listens on port $1 after 10 s; see $dir/*.log" >&2
  return 1
}

case "$cmd" in
  start)
    [ -x "$bin" ] || { echo "no custlake binary at $bin (cargo build --release, or pass its path)" >&2; exit 2; }
    mkdir -p "$dir"
    if running "$dir/scheduler.pid"; then echo "already running (benches/cluster.sh stop first)" >&2; exit 1; fi
    "$bin" --quiet scheduler --bind "127.0.0.1:$port" >"$dir/scheduler.log" 2>&1 &
    echo $! >"$dir/scheduler.pid"
    wait_port "$port"
    for i in 1 2; do
      flight=$((port + 2 * i - 1)); grpc=$((port + 2 * i))
      mkdir -p "$dir/executor$i"
      "$bin" --quiet executor --scheduler "127.0.0.1:$port" --bind "127.0.0.1:$flight" \
        --grpc-port "$grpc" --work-dir "$dir/executor$i" --concurrent-tasks 2 \
        >"$dir/executor$i.log" 2>&1 &
      echo $! >"$dir/executor$i.pid"
      wait_port "$flight"
    done
    echo "scheduler on 127.0.0.1:$port, executors on $((port + 1)) and $((port + 3)); logs in $dir/"
    ;;
  stop)
    for p in "$dir"/executor1.pid "$dir"/executor2.pid "$dir"/scheduler.pid; do
      if running "$p"; then kill "$(cat "$p")"; fi
      rm -f "$p"
    done
    echo "stopped"
    ;;
  status)
    for n in scheduler executor1 executor2; do
      if running "$dir/$n.pid"; then echo "$n: running (pid $(cat "$dir/$n.pid"))"; else echo "$n: stopped"; fi
    done
    ;;
  *) echo "usage: benches/cluster.sh start [BIN] | stop | status" >&2; exit 2 ;;
esac
