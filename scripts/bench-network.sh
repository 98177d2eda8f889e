#!/bin/bash
# Benchmark: a worker's outbound network. In one run, TCP bulk throughput worker → remote and
# remote → worker (iperf3, 4 s each) and connect + request + response latency (a small C
# client, 2,000 rounds) through
#   - the host network directly (the floor),
#   - slirp4netns (--mtu=65520, as rootless podman runs it) in a network namespace,
#   - iii's user-mode network (examples/net_bench: a TAP NIC in a network namespace served by
#     the same iii::net::Network a worker's monitor runs),
# to a "remote host": a network namespace joined to the host by a veth pair on a private /30.
# Then a real worker (`iii worker start`, network: egress) idles and its monitor's RSS is read.
#
# Not a test: run by hand, as root.   scripts/bench-network.sh
# Targets: throughput at least slirp4netns's; latency within 1.5x of slirp4netns's; the
# monitor's RSS under 8 MiB while idle with networking on.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

need() { command -v "$1" >/dev/null 2>&1; }
for tool in ip iperf3 slirp4netns cc python3 docker-registry curl; do
    need "$tool" || { echo "missing tool: $tool (apt-get install it)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "error: run as root (network namespaces)" >&2; exit 1; }

WORK=$(mktemp -d /tmp/iii-bench-net.XXXXXX)
ID=$(($$ % 100000))
RNS=iiib-r$ID SNS=iiib-s$ID WNS=iiib-w$ID VETH=iiibv$ID
HOST_IP=10.213.$((ID % 200)).1 REMOTE=10.213.$((ID % 200)).2
PIDS=()
PROJ=
cleanup() {
    if [ -n "$PROJ" ]; then
        "$ROOT/target/release/iii" -c "$PROJ/config.yaml" worker stop bench-net >/dev/null 2>&1 || true
    fi
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    ip link del "$VETH" 2>/dev/null || true
    for ns in "$RNS" "$SNS" "$WNS"; do ip netns del "$ns" 2>/dev/null || true; done
    chmod -R u+rwX "$WORK" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# The remote host.
ip netns add "$RNS"
ip -n "$RNS" link set lo up
ip link add "$VETH" type veth peer name "${VETH}p"
ip link set "${VETH}p" netns "$RNS"
ip addr add "$HOST_IP/30" dev "$VETH"
ip link set "$VETH" up
ip -n "$RNS" addr add "$REMOTE/30" dev "${VETH}p"
ip -n "$RNS" link set "${VETH}p" up

# Latency: connect, send a request line, read the response to EOF, close; N rounds.
cat >"$WORK/lat_server.c" <<'C'
#include <netinet/in.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
int main(void) {
    signal(SIGPIPE, SIG_IGN);
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(7070)};
    if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 512)) return 1;
    char buf[256], resp[] = "HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\npong";
    for (;;) {
        int c = accept(s, 0, 0);
        if (c < 0) continue;
        if (read(c, buf, sizeof buf) > 0) write(c, resp, sizeof resp - 1);
        close(c);
    }
}
C
cat >"$WORK/lat_client.c" <<'C'
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
static int cmp(const void *a, const void *b) { double x = *(double *)a, y = *(double *)b; return x < y ? -1 : x > y; }
int main(int argc, char **argv) {
    int n = atoi(argv[2]);
    double *t = malloc(sizeof(double) * n);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(7070)};
    inet_pton(AF_INET, argv[1], &a.sin_addr);
    char buf[256], req[] = "GET / HTTP/1.0\r\n\r\n";
    for (int i = 0; i < n; i++) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(s, (struct sockaddr *)&a, sizeof a)) { perror("connect"); return 1; }
        write(s, req, sizeof req - 1);
        while (read(s, buf, sizeof buf) > 0) {}
        close(s);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        t[i] = (t1.tv_sec - t0.tv_sec) * 1e6 + (t1.tv_nsec - t0.tv_nsec) / 1e3;
    }
    qsort(t, n, sizeof *t, cmp);
    printf("%.1f %.1f\n", t[n / 2], t[n * 99 / 100]);
    return 0;
}
C
cc -O2 -o "$WORK/lat_server" "$WORK/lat_server.c"
cc -O2 -o "$WORK/lat_client" "$WORK/lat_client.c"
ip netns exec "$RNS" iperf3 -s -B "$REMOTE" >/dev/null 2>&1 &
PIDS+=($!)
ip netns exec "$RNS" "$WORK/lat_server" &
PIDS+=($!)
sleep 0.5

# One client run: "<up Gbit/s> <down Gbit/s> <p50 us> <p99 us>". $1…: the command prefix that
# puts a process on the path under test.
cat >"$WORK/clients.sh" <<SH
#!/bin/bash
set -e
gbps() { python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9))'; }
up=\$(iperf3 -c $REMOTE -t 4 -J | gbps)
down=\$(iperf3 -c $REMOTE -t 4 -R -J | gbps)
lat=\$($WORK/lat_client $REMOTE 2000)
echo "\$up \$down \$lat"
SH
chmod +x "$WORK/clients.sh"

echo "host network (direct)…" >&2
read -r H_UP H_DOWN H_P50 H_P99 < <("$WORK/clients.sh")

echo "slirp4netns…" >&2
ip netns add "$SNS"
ip netns exec "$SNS" sleep 100000 &
SLEEPER=$!
PIDS+=($SLEEPER)
slirp4netns --configure --mtu=65520 "$SLEEPER" tap0 >"$WORK/slirp.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do ip -n "$SNS" addr show tap0 2>/dev/null | grep -q 10.0.2.100 && break; sleep 0.05; done
read -r S_UP S_DOWN S_P50 S_P99 < <(ip netns exec "$SNS" "$WORK/clients.sh")

echo "iii user-mode network…" >&2
cargo build --release --example net_bench --bin iii >&2
ip netns add "$WNS"
read -r I_UP I_DOWN I_P50 I_P99 < <("$ROOT/target/release/examples/net_bench" "$WNS" -- "$WORK/clients.sh" 2>"$WORK/net_bench.log")
STACK_RSS=$(grep -o 'RSS [0-9]* KiB idle, [0-9]* KiB after' "$WORK/net_bench.log" || true)

echo "a real worker's monitor…" >&2
source scripts/lib/registry.sh
start_registry "$WORK/registry"
PIDS+=("$REGISTRY_PID")
scripts/push-demo-image.sh "$REGISTRY" bench/net 1 >/dev/null
PROJ=$WORK/project
mkdir -p "$PROJ"
export III_HOME=$WORK/home
III=$ROOT/target/release/iii
"$III" -c "$PROJ/config.yaml" worker add --name bench-net "$REGISTRY/bench/net:1" >/dev/null 2>&1
"$III" -c "$PROJ/config.yaml" worker start bench-net >/dev/null
sleep 3
MON=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["monitor_pid"])' "$PROJ/.iii/workers/bench-net/state.json")
MON_RSS=$(awk '/^VmRSS/ {print $2}' "/proc/$MON/status")
MON_NET=$(ls "/proc/$MON/task" | while read -r t; do cat "/proc/$MON/task/$t/comm"; done | grep -c network || true)
"$III" -c "$PROJ/config.yaml" worker stop bench-net >/dev/null
PROJ=

ratio() { python3 -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); print('%.2fx' % (a / b) if b else 'n/a')" "$1" "$2"; }
printf '\n%-30s %12s %12s %10s %10s\n' "path" "up Gbit/s" "down Gbit/s" "p50 us" "p99 us"
printf '%-30s %12s %12s %10s %10s\n' "host network (direct)" "$H_UP" "$H_DOWN" "$H_P50" "$H_P99"
printf '%-30s %12s %12s %10s %10s\n' "slirp4netns --mtu=65520" "$S_UP" "$S_DOWN" "$S_P50" "$S_P99"
printf '%-30s %12s %12s %10s %10s\n' "iii user-mode network" "$I_UP" "$I_DOWN" "$I_P50" "$I_P99"
printf '\niii / slirp4netns: up %s, down %s (target >= 1x); latency p50 %s, p99 %s (target <= 1.5x)\n' \
    "$(ratio "$I_UP" "$S_UP")" "$(ratio "$I_DOWN" "$S_DOWN")" "$(ratio "$I_P50" "$S_P50")" "$(ratio "$I_P99" "$S_P99")"
printf 'iii / host direct:  up %s, down %s; latency p50 %s\n' \
    "$(ratio "$I_UP" "$H_UP")" "$(ratio "$I_DOWN" "$H_DOWN")" "$(ratio "$I_P50" "$H_P50")"
printf 'network stack in net_bench: %s\n' "${STACK_RSS:-?}"
printf "a worker's monitor, idle, network on (%s network thread): VmRSS %s KiB (target < 8192)\n" "$MON_NET" "$MON_RSS"
