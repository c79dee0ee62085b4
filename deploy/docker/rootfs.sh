#!/bin/sh
# Assembles a minimal root file system for a runtime image: the named files (and, for symbolic
# links, what they point to), every shared library the ELF files among them load (their `ldd`
# closure, the C library included), /etc/passwd and /etc/group with root and the service user
# 65532, and /tmp. No shell, no package manager, no coreutils: nothing a service does not call.
#   rootfs.sh DEST FILE...
# Runs in a Debian 12 build stage where the files' packages are installed.
set -eu
dest=$1
shift
mkdir -p "$dest"
# Debian 12 has merged /usr: keep /bin, /lib, /lib64 and /sbin as the links they are here.
for link in /bin /lib /lib64 /sbin; do
  if [ -L "$link" ]; then cp -a "$link" "$dest$link"; fi
done

# Copies one path, its directories resolved (so /lib/x/libc.so.6 lands in /usr/lib/x), and if it
# is a symbolic link, its target too.
copy() {
  dir=$(readlink -f "$(dirname "$1")")
  path="$dir/$(basename "$1")"
  [ -e "$dest$path" ] && [ ! -L "$path" ] && return 0
  cp -a --parents "$path" "$dest"
  if [ -L "$path" ]; then copy "$(readlink -f "$path")"; fi
}

for f in "$@"; do
  [ -e "$f" ] || { echo "rootfs.sh: $f does not exist" >&2; exit 1; }
  copy "$f"
  # The shared libraries an ELF file loads, its interpreter (ld-linux) included.
  ldd "$f" 2>/dev/null | awk '/=> \// {print $3} /^\t\// {print $1}' | while read -r lib; do
    copy "$lib"
  done
done

mkdir -p "$dest/etc" "$dest/tmp" "$dest/var/lib"
chmod 1777 "$dest/tmp"
# The service user has a name and a home: ssh refuses to run for a uid without a passwd entry.
printf 'root:x:0:0:root:/root:/nonexistent\nxcat3:x:65532:65532:xcat3:/tmp:/nonexistent\n' >"$dest/etc/passwd"
printf 'root:x:0:\nxcat3:x:65532:\n' >"$dest/etc/group"
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$dest/etc/nsswitch.conf"
