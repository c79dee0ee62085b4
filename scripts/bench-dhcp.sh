#!/usr/bin/env bash
# DHCP benchmark, side by side in one run: the xcat3 network agent (inside `xcat3-server
# all-in-one`), Kea 2.2 (memfile) and ISC dhcpd 4.4, each pinned to one core, loaded by Kea's perfdhcp from a client
# namespace with 5 s points. Prints, per server and offered rate: completed DORA exchanges per
# second, loss, and server CPU per exchange (user+sys of the server process / completed DORAs).
#
#   bash scripts/bench-dhcp.sh [RATES] [RESERVATIONS] [UNKNOWN]   default "2000 4000 8000 12000", 10000, 40000
#
# The unknown machines (UNKNOWN distinct MACs, more than an agent's first block claims cover)
# take addresses from a dynamic range of 49,150 addresses, so the xcat3 agent must keep claiming
# blocks from the api while it answers; a DISCOVER it cannot answer shows as loss and in its
# `xcat3_dhcp_ignored_total` counter, printed after its runs.
#
# Installs kea-admin (perfdhcp) and kea-dhcp4-server from Debian. ISC dhcpd is only unpacked from
# its package (`apt-get download`), never installed, so no dhcpd service can start on this
# machine's interfaces. Everything runs in network namespaces it creates (xb-srv, xb-cli) and
# removes.
set -euo pipefail
cd "$(dirname "$0")/.."
RATES=${1:-"2000 4000 8000 12000"}
N=${2:-10000}
DYN=${3:-40000}
command -v perfdhcp >/dev/null && command -v kea-dhcp4 >/dev/null || {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kea-admin kea-dhcp4-server >/dev/null
}
cargo build -q --release -p xcat3-server -p xcat3-cli
BIN=$PWD/target/release
W=$(mktemp -d)
cleanup() {
  for ns in xb-srv xb-cli; do
    for p in $(ip netns pids $ns 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del $ns 2>/dev/null || true
  done
  rm -rf "$W"
}
trap cleanup EXIT
cleanup; W=$(mktemp -d)
ip netns add xb-srv; ip netns add xb-cli
ip link add s0 netns xb-srv type veth peer name c0 netns xb-cli
ip -n xb-srv addr add 10.88.0.1/16 dev s0; ip -n xb-srv link set s0 up; ip -n xb-srv link set lo up
# perfdhcp acts as a relay: its requests carry giaddr = the client interface's address
# (10.88.0.2, seen in a capture), and the servers answer it on port 67.
ip -n xb-cli addr add 10.88.0.2/16 dev c0; ip -n xb-cli link set c0 up; ip -n xb-cli link set lo up

# MACs of the reserved machines, and the other machines' (dynamic pool).
python3 - "$W" "$N" "$DYN" <<'PY'
import sys, json
w, n, d = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
res = [f"02:00:{i>>16 & 255:02x}:{i>>8 & 255:02x}:{i & 255:02x}:01" for i in range(n)]
dyn = [f"02:00:{i>>16 & 255:02x}:{i>>8 & 255:02x}:{i & 255:02x}:02" for i in range(d)]
open(f"{w}/reserved.macs", "w").write("\n".join(res) + "\n")
open(f"{w}/dynamic.macs", "w").write("\n".join(dyn) + "\n")
ip = lambda i: f"10.88.{1 + i // 250}.{1 + i % 250}"
nodes = [{"name": f"b{i:05d}", "nics": [{"name": "eth0", "mac": m, "ip": ip(i), "primary": True}]} for i, m in enumerate(res)]
open(f"{w}/nodes.yaml", "w").write(json.dumps({"nodes": nodes}))
kea = {"Dhcp4": {
  "interfaces-config": {"interfaces": ["s0"], "dhcp-socket-type": "raw"},
  "lease-database": {"type": "memfile", "persist": True, "name": f"{w}/kea-leases.csv", "lfc-interval": 0},
  "valid-lifetime": 43200, "host-reservation-identifiers": ["hw-address"],
  "reservations-global": False, "reservations-in-subnet": True,
  "subnet4": [{"id": 1, "subnet": "10.88.0.0/16", "pools": [{"pool": "10.88.64.1 - 10.88.255.250"}],
    "option-data": [{"name": "routers", "data": "10.88.0.254"}],
    "reservations": [{"hw-address": m, "ip-address": ip(i), "hostname": f"b{i:05d}"} for i, m in enumerate(res)]}],
  "loggers": [{"name": "kea-dhcp4", "severity": "WARN", "output_options": [{"output": f"{w}/kea.log"}]}]}}
open(f"{w}/kea.json", "w").write(json.dumps(kea))
hosts = "".join(f"host b{i:05d} {{ hardware ethernet {m}; fixed-address {ip(i)}; }}\n" for i, m in enumerate(res))
open(f"{w}/dhcpd.conf", "w").write(
    "authoritative;\ndefault-lease-time 43200;\nmax-lease-time 43200;\n"
    "subnet 10.88.0.0 netmask 255.255.0.0 {\n  range 10.88.64.1 10.88.255.250;\n  option routers 10.88.0.254;\n}\n" + hosts)
PY

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TCK=$(getconf CLK_TCK)

# Datagrams the server namespace's UDP sockets dropped for a full receive buffer (xcat3 only:
# Kea reads with a raw socket).
udp_drops() { ip netns exec xb-srv awk '/^Udp:/ && $2 ~ /^[0-9]/ {print $6}' /proc/net/snmp; }

# CPU ticks a process uses in 5 s of doing nothing (timers, polls), subtracted in the last column.
idle_ticks() {
  local a b
  a=$(cpu_ticks "$1"); sleep 5; b=$(cpu_ticks "$1")
  echo $((b - a))
}

# perfdhcp: one 5 s point at RATE with the MACs in FILE; prints
# "offered completed/s loss% cpu_us_per_dora cpu_us_per_dora_minus_idle".
point() {
  local pid=$1 rate=$2 macs=$3 idle=$4 clients=$5
  local before after out
  local drops0 drops1
  drops0=$(udp_drops)
  before=$(cpu_ticks "$pid")
  out=$( { TIMEFORMAT='LOADGEN %U %S %R'; time ip netns exec xb-cli taskset -c 0 perfdhcp -4 -l c0 -r "$rate" -p 5 -M "$macs" -R "$clients"; } 2>&1 || true)
  after=$(cpu_ticks "$pid")
  drops1=$(udp_drops)
  python3 - "$before" "$after" "$TCK" "$rate" "$idle" "$((drops1 - drops0))" <<PY "$out"
import re, sys
before, after, tck, rate, idle, drops = (int(a) for a in sys.argv[1:7])
out = sys.argv[7]
sent = [int(x) for x in re.findall(r"sent packets: (\d+)", out)]
recv = [int(x) for x in re.findall(r"received packets: (\d+)", out)]
if len(sent) < 2:
    print(f"{rate} 0 100 0  # perfdhcp: {out[-300:]!r}"); sys.exit()
done = recv[1]                      # ACKs = completed DORA exchanges
offered = sent[0]
loss = 100.0 * (1 - done / offered) if offered else 100
cpu_us = (after - before) / tck * 1e6 / done if done else 0
busy_us = max(0, after - before - idle) / tck * 1e6 / done if done else 0
lg = re.search(r"LOADGEN ([\d.]+) ([\d.]+) ([\d.]+)", out)
loadgen = 100 * (float(lg[1]) + float(lg[2])) / float(lg[3]) if lg else 0
print(f"{rate} {done/5:.0f} {loss:.2f} {cpu_us:.1f} {busy_us:.1f} {drops} {loadgen:.0f}")
PY
}

run_points() { # NAME PID MACFILE LABEL
  local idle clients=$N
  [ "$4" = dynamic ] && clients=$DYN
  idle=$(idle_ticks "$2")
  for r in $RATES; do
    printf '%-8s %-12s ' "$1" "$4"; point "$2" "$r" "$3" "$idle" "$clients"
  done
}

echo "# server  workload     offered/s  DORA/s  loss%  server-CPU-us/DORA  (minus idle)  rcvbuf-drops  perfdhcp-CPU%"

# --- xcat3 ---
mkdir -p "$W/x"
ip netns exec xb-srv taskset -c 1 "$BIN/xcat3-server" all-in-one --insecure --data-dir "$W/x" \
  --listen 127.0.0.1:3010 --metrics-listen 127.0.0.1:9310 --dhcp-interfaces s0 --tftp-listen none \
  --http-listen 10.88.0.1:8080 --dns-listen none --lease-time 43200 >"$W/x/out" 2>"$W/x/log" &
XPID=$!
for _ in $(seq 100); do grep -q "api ready" "$W/x/out" 2>/dev/null && break; sleep 0.1; done
X="ip netns exec xb-srv $BIN/xcat3 --url http://127.0.0.1:3010"
$X network-create bench subnet=10.88.0.0 netmask=255.255.0.0 gateway=10.88.0.254 \
  dynamic_range=10.88.64.1-10.88.255.250 >/dev/null
t0=$(date +%s%N)
$X create -f "$W/nodes.yaml" >/dev/null
t1=$(date +%s%N)
echo "# xcat3: $N reservations created in $(( (t1 - t0) / 1000000 )) ms (create request, end to end)"
sleep 2
run_points xcat3 "$XPID" "$W/reserved.macs" reserved
run_points xcat3 "$XPID" "$W/dynamic.macs" dynamic
echo "# xcat3 agent counters after its runs:"
ip netns exec xb-srv curl -s http://127.0.0.1:9310/metrics | grep -E '^xcat3_dhcp_(replies|ignored)_total' | sed 's/^/#   /'
kill "$XPID"; wait "$XPID" 2>/dev/null || true

# --- Kea ---
mkdir -p /run/kea /var/run/kea
ip netns exec xb-srv taskset -c 1 kea-dhcp4 -c "$W/kea.json" >"$W/kea.out" 2>&1 &
KPID=$!
sleep 2
kill -0 "$KPID" 2>/dev/null || { echo "kea-dhcp4 did not start:"; cat "$W/kea.out"; exit 1; }
run_points kea "$KPID" "$W/reserved.macs" reserved
rm -f "$W/kea-leases.csv"*
run_points kea "$KPID" "$W/dynamic.macs" dynamic
kill "$KPID"; wait "$KPID" 2>/dev/null || true

# --- ISC dhcpd (unpacked, not installed) ---
(cd "$W" && apt-get download -qq isc-dhcp-server >/dev/null 2>&1 && dpkg-deb -x isc-dhcp-server_*.deb isc)
DHCPD="$W/isc/usr/sbin/dhcpd"
if [ -x "$DHCPD" ]; then
  : > "$W/dhcpd.leases"
  ip netns exec xb-srv taskset -c 1 "$DHCPD" -4 -f -q -cf "$W/dhcpd.conf" -lf "$W/dhcpd.leases" \
    -pf "$W/dhcpd.pid" s0 >"$W/dhcpd.out" 2>&1 &
  DPID=$!
  sleep 2
  kill -0 "$DPID" 2>/dev/null || { echo "dhcpd did not start:"; cat "$W/dhcpd.out"; exit 1; }
  run_points dhcpd "$DPID" "$W/reserved.macs" reserved
  kill "$DPID"; wait "$DPID" 2>/dev/null || true
  : > "$W/dhcpd.leases"
  ip netns exec xb-srv taskset -c 1 "$DHCPD" -4 -f -q -cf "$W/dhcpd.conf" -lf "$W/dhcpd.leases" \
    -pf "$W/dhcpd.pid" s0 >"$W/dhcpd.out" 2>&1 &
  DPID=$!
  sleep 2
  run_points dhcpd "$DPID" "$W/dynamic.macs" dynamic
  kill "$DPID"; wait "$DPID" 2>/dev/null || true
else
  echo "# ISC dhcpd: could not unpack isc-dhcp-server; skipped"
fi
