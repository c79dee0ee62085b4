#!/usr/bin/env bash
# Builds the container images where nothing can be pulled: a Debian 12 base made with debootstrap
# from Debian's packages (cached by the hash of what defines it), then the runtime stages of
# deploy/docker/Dockerfile with binaries built on this host (`server-prebuilt`, `cli-prebuilt`).
#   bash scripts/images.sh [release|debug|base] [--test]     default: release
# --test also builds the images the container tests run beside xcat3's (tests/images/Dockerfile:
# etcd, PostgreSQL and Redfish BMC simulators, tagged xcat3-test/NAME:latest).
# `base` builds only what needs no xcat3 binary (the base, and with --test the etcd and PostgreSQL
# images): scripts/test.sh runs it while cargo builds, since it waits on the network, not the CPU.
# Tags: ghcr.io/xcat3/xcat3-server:VERSION and ghcr.io/xcat3/xcat3:VERSION (the names the Helm
# chart uses; VERSION is the chart's appVersion), and xcat3/debian:bookworm-HASH for the base.
# Prints the tags, and each image's size.
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-release}"
test_images="${2:-}"
case "$profile" in
  release) cargo_profile=release; dir=release ;;
  debug) cargo_profile=dev; dir=debug ;;
  base) ;;
  *) echo "usage: $0 [release|debug|base] [--test]" >&2; exit 2 ;;
esac
version=$(awk -F'"' '/^appVersion:/ {print $2}' deploy/helm/xcat3/Chart.yaml)

# The base: what debootstrap gets from the mirror this machine's apt uses.
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
mirror="${mirror:-http://deb.debian.org/debian}"
definition="debootstrap --variant=minbase bookworm $mirror (v1)"
base="xcat3/debian:bookworm-$(printf '%s' "$definition" | sha256sum | cut -c1-12)"
if ! docker image inspect "$base" >/dev/null 2>&1; then
  command -v debootstrap >/dev/null || { echo "debootstrap missing: run scripts/install-deps.sh" >&2; exit 1; }
  rootfs=$(mktemp -d)
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/dev/null
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | docker import --change 'CMD ["/bin/bash"]' - "$base" >/dev/null
fi

build() {
  docker build -q -f "$1" --build-arg "BASE=$base" --target "$2" -t "$3" "$4" \
    >/dev/null 2> >(grep -v -e DEPRECATED -e 'legacy builder' -e buildx -e '^ *$' >&2)
}
if [ "$profile" = base ]; then
  if [ "$test_images" = --test ]; then
    docker tag "$base" xcat3-test/base:latest
    for name in etcd postgresql; do
      build tests/images/Dockerfile "$name" "xcat3-test/$name:latest" tests/images
      echo "image xcat3-test/$name:latest"
    done
  fi
  exit 0
fi

if [ "$profile" = debug ]; then
  # Exactly the test command's build (scripts/test.sh): its artifacts are reused, not rebuilt with
  # another feature set.
  cargo build --workspace --bins
else
  cargo build --profile "$cargo_profile" -p xcat3-server -p xcat3-cli
  if [ "$test_images" = --test ]; then cargo build --profile "$cargo_profile" -p xcat3-tests --bin xcat3-bmcsim; fi
fi
context="target/docker-context"
rm -rf "$context"
mkdir -p "$context/bin" "$context/deploy/docker"
cp deploy/docker/rootfs.sh "$context/deploy/docker/"
# Symbols and debug information stay on the host: the images carry what runs.
for b in xcat3-server xcat3 xcat3-copycds; do
  strip -o "$context/bin/$b" "target/$dir/$b"
done
build deploy/docker/Dockerfile server-prebuilt "ghcr.io/xcat3/xcat3-server:$version" "$context"
build deploy/docker/Dockerfile cli-prebuilt "ghcr.io/xcat3/xcat3:$version" "$context"
if [ "$test_images" = --test ]; then
  docker tag "$base" xcat3-test/base:latest
  strip -o "$context/bin/xcat3-bmcsim" "target/$dir/xcat3-bmcsim"
  cp tests/images/postgres-entrypoint.sh "$context/"
  for name in etcd postgresql bmcsim; do
    build tests/images/Dockerfile "$name" "xcat3-test/$name:latest" "$context"
    echo "image xcat3-test/$name:latest"
  done
fi
rm -rf "$context"
for image in "ghcr.io/xcat3/xcat3-server:$version" "ghcr.io/xcat3/xcat3:$version"; do
  size=$(docker image inspect -f '{{.Size}}' "$image")
  compressed=$(docker save "$image" | gzip -1 | wc -c)
  printf 'image %s (%s): %s MB, %s MB gzipped\n' "$image" "$profile" \
    "$((size / 1000000))" "$((compressed / 1000000))"
done
