#!/usr/bin/env bash
# Builds the boot payloads the deploy tests serve as osimages, from Debian packages downloaded (not
# installed) into target/test-tools/payloads (idempotent; `cargo clean` removes them):
#   callback/vmlinuz, callback/initrd.gz: Debian's cloud kernel and an initramfs of static busybox,
#     the virtio-net modules and an /init that takes DHCP, reads its preseed URL (url=...) from the
#     kernel command line, POSTs to the deploy's callback (.../done) and powers off. It is the
#     "installed system" of the end-to-end deploy test.
#   d-i/linux, d-i/initrd.gz: the real Debian 12 installer (debian-installer-12-netboot-amd64).
set -euo pipefail
OUT=${1:-target/test-tools/payloads}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
if [ -s "$OUT/callback/initrd.gz" ] && [ -s "$OUT/d-i/initrd.gz" ]; then
  exit 0
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
KPKG=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
(cd "$TMP" && apt-get download -q -o APT::Sandbox::User=root "$KPKG" busybox-static debian-installer-12-netboot-amd64 >/dev/null)
for f in "$TMP"/*.deb; do dpkg-deb -x "$f" "$TMP/root"; done
KVER=${KPKG#linux-image-}

mkdir -p "$OUT/d-i"
DI=$TMP/root/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64
cp "$DI/linux" "$DI/initrd.gz" "$OUT/d-i/"

mkdir -p "$OUT/callback"
cp "$TMP/root/boot/vmlinuz-$KVER" "$OUT/callback/vmlinuz"
R=$TMP/initrd
mkdir -p "$R"/{bin,proc,sys,dev,lib/modules,usr/share/udhcpc,tmp}
cp "$TMP/root/bin/busybox" "$R/bin/busybox"
# Load order (the .deb has no modules.dep).
MODS="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net"
for m in $MODS; do
  cp "$(find "$TMP/root/lib/modules/$KVER" -name "$m.ko*" | head -1)" "$R/lib/modules/"
done
cat > "$R/usr/share/udhcpc/default.script" <<'S'
#!/bin/busybox sh
case "$1" in
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$router" ] && ip route add default via "${router%% *}" dev "$interface"
    echo "XCAT3-TEST: leased $ip on $interface" ;;
esac
S
chmod +x "$R/usr/share/udhcpc/default.script"
cat > "$R/init" <<S
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
echo "XCAT3-TEST: installed system up, kernel \$(uname -r)"
for m in $MODS; do insmod /lib/modules/\$m.ko* || echo "XCAT3-TEST: insmod \$m failed"; done
IF=\$(ls /sys/class/net | grep -v '^lo\$' | head -1)
ip link set lo up; ip link set "\$IF" up
URL=\$(tr ' ' '\n' < /proc/cmdline | sed -n 's/^url=//p')
DONE=\${URL%preseed}done
if udhcpc -i "\$IF" -n -q -t 10 -T 2 -s /usr/share/udhcpc/default.script; then
  echo "XCAT3-TEST: calling back \$DONE"
  wget -q -O - --post-data= "\$DONE" && echo
fi
echo "XCAT3-TEST: done, powering off"
poweroff -f
S
chmod +x "$R/init"
(cd "$R" && find . | cpio -o -H newc --quiet | gzip -1 > "$OUT/callback/initrd.gz")
ls -la "$OUT/callback" "$OUT/d-i"
