#!/usr/bin/env bash
# TFTP benchmark, side by side in one run: the xcat3 network agent's TFTP server and tftpd-hpa,
# serving the same 30 MB file with blksize 1468 to curl, one client and then 20 at once, from a
# client namespace. Prints wall time and throughput per server and case.
#
#   bash scripts/bench-tftp.sh [SIZE_MB] [CLIENTS]      default 30 and 20
#
# Installs tftpd-hpa from Debian (its daemon is started by hand here, only inside the namespace).
set -euo pipefail
cd "$(dirname "$0")/.."
MB=${1:-30}
CLIENTS=${2:-20}
command -v in.tftpd >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends tftpd-hpa >/dev/null
command -v curl >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends curl >/dev/null
cargo build -q --release -p xcat3-server
BIN=$PWD/target/release
W=$(mktemp -d)
cleanup() {
  for ns in xt-srv xt-cli; do
    for p in $(ip netns pids $ns 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del $ns 2>/dev/null || true
  done
  rm -rf "$W"
}
trap cleanup EXIT
ip netns add xt-srv; ip netns add xt-cli
ip link add s0 netns xt-srv type veth peer name c0 netns xt-cli
ip -n xt-srv addr add 10.89.0.1/24 dev s0; ip -n xt-srv link set s0 up; ip -n xt-srv link set lo up
ip -n xt-cli addr add 10.89.0.2/24 dev c0; ip -n xt-cli link set c0 up; ip -n xt-cli link set lo up
mkdir -p "$W/root" "$W/agent"
head -c $((MB * 1024 * 1024)) /dev/urandom > "$W/root/big.img"

ip netns exec xt-srv "$BIN/xcat3-server" network --api-url http://127.0.0.1:1 --no-dhcp --dns-listen none \
  --tftp-listen 10.89.0.1:69 --tftp-root "$W/root" --ipxe-dir none --http-listen 10.89.0.1:8080 \
  --network-metrics-listen none --state-dir "$W/agent" >/dev/null 2>"$W/agent.log" &
ip netns exec xt-srv in.tftpd --listen --foreground --address 10.89.0.1:6969 --secure "$W/root" &
sleep 1

fetch() { # PORT N -> seconds for N parallel downloads
  local port=$1 n=$2 t0 t1
  t0=$(date +%s%N)
  for i in $(seq "$n"); do
    ip netns exec xt-cli curl -sf --tftp-blksize 1468 -o "$W/out.$i" "tftp://10.89.0.1:$port/big.img" &
  done
  wait
  t1=$(date +%s%N)
  for i in $(seq "$n"); do cmp -s "$W/out.$i" "$W/root/big.img" || { echo "corrupt download from port $port" >&2; exit 1; }; done
  rm -f "$W"/out.*
  python3 -c "print(f'{($t1 - $t0) / 1e9:.2f}')"
}

# One untimed fetch from each server first: both serve from warm caches (the page cache for
# tftpd-hpa, the agent's file cache), as when a fleet boots the same image.
_=$(fetch 69 1)
_=$(fetch 6969 1)

echo "# server     clients  seconds  MB/s (total)"
for case in 1 "$CLIENTS"; do
  for srv in "xcat3 69" "tftpd-hpa 6969"; do
    set -- $srv
    s=$(fetch "$2" "$case")
    python3 -c "print(f'{\"$1\":<12} {$case:>7}  {$s:>7}  {$MB * $case / $s:8.1f}')"
  done
done
