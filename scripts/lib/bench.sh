# Shared by the scripts that measure raftkv beside etcd 3.4 in one sitting
# (source it from a script that has cd'd to the repository):
# - installs Debian's etcd-server if missing, and what raftkv's build needs;
# - builds raftkv into the shared build directory ($RAFTKV is the binary);
# - $WORK is a temp dir removed on exit, with every process in PIDS killed
#   first (KEEP_LOGS=dir keeps the servers' logs);
# - start_etcd / start_raftkv start a 3-member cluster on loopback and print
#   its endpoints; stop_cluster stops it; server_ticks is the user+system CPU
#   of the running clusters' processes, in clock ticks ($TICK per second);
# - run_bench runs one `raftkv bench` row and prints it with requests/s,
#   p50, p99 and the CPU per request of the servers and of the generator.

if ! command -v etcd >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq etcd-server >/dev/null
fi
scripts/install-deps
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/raftkv-target}"
cargo build -q --bin raftkv
RAFTKV=$CARGO_TARGET_DIR/debug/raftkv
WORK=$(mktemp -d)
PIDS=()
TICK=$(getconf CLK_TCK)
export ETCDCTL_API=3

cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true
  if [ -n "${KEEP_LOGS:-}" ]; then mkdir -p "$KEEP_LOGS" && cp "$WORK"/*.log "$KEEP_LOGS"/ 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

server_ticks() { # user + system CPU of the cluster's processes, in clock ticks
  local sum=0 p
  for p in "${PIDS[@]}"; do
    sum=$((sum + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$sum"
}

wait_healthy() { # endpoint
  for _ in $(seq 100); do
    if "$RAFTKV" put bench-ready 1 --endpoints "$1" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "cluster at $1 did not come up" >&2; exit 1
}

# etcd: 3 members on 12379/12380, 22379/22380, 32379/32380.
ETCD_ENDPOINTS=http://127.0.0.1:12379,http://127.0.0.1:22379,http://127.0.0.1:32379
start_etcd() {
  local cluster="e1=http://127.0.0.1:12380,e2=http://127.0.0.1:22380,e3=http://127.0.0.1:32380" i
  for i in 1 2 3; do
    etcd --name "e$i" --data-dir "$WORK/etcd$i" \
      --listen-client-urls "http://127.0.0.1:${i}2379" --advertise-client-urls "http://127.0.0.1:${i}2379" \
      --listen-peer-urls "http://127.0.0.1:${i}2380" --initial-advertise-peer-urls "http://127.0.0.1:${i}2380" \
      --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token bench "$@" \
      >"$WORK/etcd$i.log" 2>&1 &
    PIDS+=($!)
  done
  wait_healthy "$ETCD_ENDPOINTS"
}

# raftkv: the same shape of cluster (three members in one `raftkv dev` process).
RAFTKV_ENDPOINTS=http://127.0.0.1:2379,http://127.0.0.1:22379,http://127.0.0.1:32379
start_raftkv() {
  "$RAFTKV" dev --dir "$WORK/raftkv" >"$WORK/raftkv.log" 2>&1 &
  PIDS+=($!)
  wait_healthy http://127.0.0.1:2379
}

stop_cluster() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  PIDS=()
}

etcd_version() {
  etcd --version | head -1 | awk '{print $3}'
}

run_bench() { # label workload endpoints clients conns total key-space [bench flags...]
  local label=$1 workload=$2 endpoints=$3 clients=$4 conns=$5 total=$6 keys=$7 before after
  shift 7
  before=$(server_ticks)
  # `times` prints the subshell's own and then its children's CPU time.
  (
    "$RAFTKV" bench $workload --endpoints "$endpoints" --clients "$clients" --conns "$conns" --total "$total" \
      --key-size 16 --val-size 256 --key-space-size "$keys" --quiet "$@"
    times
  ) >"$WORK/bench.out"
  after=$(server_ticks)
  local to=all
  [[ " $* " == *" --target-leader "* ]] && to=leader
  awk -v label="$label" -v w="$workload" -v c="$clients" -v to="$to" -v ticks=$((after - before)) -v tick="$TICK" '
    function secs(t) { split(t, a, /[ms]/); return a[1] * 60 + a[2] }
    /Requests:/ {n=$2} /Errors:/ {errs=$2} /Requests\/sec/ {rps=$2} /p50 / {p50=$2} /p99 / {p99=$2}
    /^[0-9]+m[0-9.]+s [0-9]+m[0-9.]+s$/ {bench = secs($1) + secs($2)}
    END {printf "%-7s %-4s to %-6s clients=%-4s %7.0f req/s  p50 %7.3f ms  p99 %7.3f ms  server %4.0f µs/req  bench %3.0f µs/req\n",
      label, w, to, c, rps, p50, p99, ticks / tick * 1e6 / n, bench * 1e6 / n
      if (errs > 0) printf "        (%d errors)\n", errs}' "$WORK/bench.out"
}
