#!/usr/bin/env bash
# Starts libvirtd (qemu:///system; Debian's libvirt-daemon-system, no systemd needed) inside a
# network namespace created here, so no libvirt network can ever touch the host's interfaces, and
# prints `export XCAT3_TEST_LIBVIRT_DIR=...`. `scripts/libvirt.sh stop DIR` stops it.
# QEMU runs as root: /dev/kvm is root-only here and KVM is unusable, so test domains use TCG.
set -euo pipefail
NS=xcat3-lv

if [ "${1:-}" = stop ]; then
  D=$2
  for f in "$D/libvirtd.pid" "$D/virtlogd.pid"; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  ip netns del $NS 2>/dev/null || true
  rm -rf "$D"
  exit 0
fi

rm -f /etc/libvirt/qemu/networks/autostart/*.xml
grep -q '^user = "root"' /etc/libvirt/qemu.conf || printf 'user = "root"\ngroup = "root"\n' >> /etc/libvirt/qemu.conf
D=$(mktemp -d /tmp/xcat3-libvirt-XXXXXX)
if virsh -c qemu:///system version >/dev/null 2>&1; then
  echo "export XCAT3_TEST_LIBVIRT_DIR=$D"   # already running: use it, stop nothing of it
  exit 0
fi
ip netns del $NS 2>/dev/null || true
ip netns add $NS
ip -n $NS link set lo up
ip netns exec $NS virtlogd -d -p "$D/virtlogd.pid"
ip netns exec $NS libvirtd -d -p "$D/libvirtd.pid"
for _ in $(seq 1 300); do virsh -c qemu:///system version >/dev/null 2>&1 && break; sleep 0.1; done
virsh -c qemu:///system version >/dev/null
echo "export XCAT3_TEST_LIBVIRT_DIR=$D"
