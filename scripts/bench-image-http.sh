#!/usr/bin/env bash
# Install-tree HTTP benchmark, side by side in one run: the xcat3 image service and nginx serving
# the same tree (one 256 MiB image like an installer's squashfs, and 256 files of 1 MiB like
# packages) to CLIENTS concurrent curl clients in another namespace, each fetching the whole tree.
# Prints wall time and throughput per server; the ratio is what the goal (>= 80 % of nginx) is about.
#
#   bash scripts/bench-image-http.sh [CLIENTS] [ROUNDS]      default 20 and 3
#
# Installs nginx-light from Debian (started by hand here, only inside the namespace).
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${1:-20}
ROUNDS=${2:-3}
command -v nginx >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light >/dev/null
cargo build -q --release -p xcat3-server
BIN=$PWD/target/release
W=$(mktemp -d)
chmod 755 "$W"   # nginx workers run as www-data
cleanup() {
  for ns in xh-srv xh-cli; do
    for p in $(ip netns pids $ns 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del $ns 2>/dev/null || true
  done
  rm -rf "$W"
}
trap cleanup EXIT
ip netns add xh-srv; ip netns add xh-cli
ip link add s0 netns xh-srv type veth peer name c0 netns xh-cli
ip -n xh-srv addr add 10.90.0.1/24 dev s0; ip -n xh-srv link set s0 up; ip -n xh-srv link set lo up
ip -n xh-cli addr add 10.90.0.2/24 dev c0; ip -n xh-cli link set c0 up; ip -n xh-cli link set lo up

TREE=$W/images/trees/benchtree
mkdir -p "$TREE/Packages" "$W/image"
head -c $((256 * 1024 * 1024)) /dev/urandom > "$TREE/install.img"
for i in $(seq -w 1 256); do head -c $((1024 * 1024)) /dev/urandom > "$TREE/Packages/pkg-$i.rpm"; done
(cd "$TREE" && find . -type f | sed 's|^\./||' | sort) > "$W/files"

ip netns exec xh-srv "$BIN/xcat3-server" image --database-url "sqlite://$W/image/db.sqlite?mode=rwc" \
  --image-dir "$W/images" --image-http-listen 10.90.0.1:8090 --image-grpc-listen 127.0.0.1:0 \
  --insecure >/dev/null 2>"$W/image.log" &
cat > "$W/nginx.conf" <<C
worker_processes auto;
pid $W/nginx.pid;
error_log $W/nginx.err;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  server { listen 10.90.0.1:8091; root $W/images; }
}
C
ip netns exec xh-srv nginx -c "$W/nginx.conf" -g 'daemon off;' &
sleep 1

fetch() { # PORT N -> seconds for N clients each fetching the whole tree
  local port=$1 n=$2 t0 t1 urls
  urls=$(sed "s|^\(.*\)$|url = http://10.90.0.1:$port/trees/benchtree/\1\noutput = /dev/null|" "$W/files")
  t0=$(date +%s%N)
  for i in $(seq "$n"); do
    echo "$urls" | ip netns exec xh-cli curl -sf -K - &
  done
  wait
  t1=$(date +%s%N)
  python3 -c "print(f'{($t1 - $t0) / 1e9:.2f}')"
}
# Byte-identical check and warm-up: one fetch of the big file from each.
for port in 8090 8091; do
  ip netns exec xh-cli curl -sf -o "$W/check" "http://10.90.0.1:$port/trees/benchtree/install.img"
  cmp -s "$W/check" "$TREE/install.img" || { echo "corrupt download from port $port" >&2; exit 1; }
done
# Ranges, as installers use them.
ip netns exec xh-cli curl -sf -r 1000-1999 -o "$W/part" "http://10.90.0.1:8090/trees/benchtree/install.img"
[ "$(stat -c %s "$W/part")" = 1000 ] || { echo "range request returned the wrong size" >&2; exit 1; }

MB=$(( (256 + 256) * CLIENTS ))
echo "# server   clients  round  seconds  MB/s (total)"
for r in $(seq "$ROUNDS"); do
  for srv in "xcat3 8090" "nginx 8091"; do
    set -- $srv
    s=$(fetch "$2" "$CLIENTS")
    python3 -c "print(f'{\"$1\":<10} {$CLIENTS:>7} {$r:>6} {$s:>8} {$MB / $s:>10.1f}')"
  done
done
