#!/usr/bin/env bash
# Fuzzes every parser that hostile input reaches (fuzz/fuzz_targets/*.rs) with cargo fuzz
# (libFuzzer), each for SECONDS, starting from the seeds in fuzz/seeds/<target> (plus a small ISO
# that xorriso builds here, since a binary seed is not committed). Any crash fails the script and
# leaves its input in fuzz/artifacts/<target>/: turn it into a regression test.
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]     default: 60 s, every target
# cargo-fuzz needs nightly features; on the stable toolchain RUSTC_BOOTSTRAP=1 enables them.
# Built with overflow checks and without a sanitizer (the code has no `unsafe`: what we look for
# is panics, overflows, hangs and memory blow-ups, which libFuzzer's own limits catch).
# The targets run from the built binaries, as many at once as there are cores.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
export RUSTC_BOOTSTRAP=1
cd fuzz
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(packets noderange trees import_yaml templates iso)

# A small ISO in the layout of a real medium (a .treeinfo, a kernel, a symlink) as the iso seed
# (written to the ignored corpus directory: a clean clone has no seeds/iso).
mkdir -p corpus/iso
if command -v xorriso >/dev/null && ! [ -s corpus/iso/rocky.iso ]; then
  tree=$(mktemp -d)
  mkdir -p "$tree/images/pxeboot" "$tree/Packages"
  printf '[release]\nname = Rocky Linux\nversion = 9.4\n[tree]\narch = x86_64\n' > "$tree/.treeinfo"
  echo kernel > "$tree/images/pxeboot/vmlinuz"
  echo initrd > "$tree/images/pxeboot/initrd.img"
  ln -s images/pxeboot/vmlinuz "$tree/vmlinuz"
  ln -s ../images "$tree/Packages/up"
  xorriso -as mkisofs -quiet -R -J -o corpus/iso/rocky.iso "$tree"
  rm -rf "$tree"
fi

# Start from the workspace's lock file, so the fuzz build uses the same dependency versions.
[ -e Cargo.lock ] || cp ../Cargo.lock Cargo.lock
# The binaries go to fuzz/target whatever CARGO_TARGET_DIR says, so the runs below find them.
cargo fuzz build --sanitizer none --debug-assertions --target-dir target
bin_dir="target/$(rustc -vV | sed -n 's/^host: //p')/release"

# One target's run, its log in artifacts/<target>/log; prints what matters and returns non-zero
# on a crash.
fuzz_one() {
  local t=$1 max_len=4096 rc=0
  case "$t" in
    packets) max_len=1500 ;;
    iso) max_len=262144 ;;
  esac
  mkdir -p "corpus/$t" "artifacts/$t" "seeds/$t"
  "$bin_dir/$t" "corpus/$t" "seeds/$t" \
    -max_total_time="$seconds" -max_len="$max_len" -rss_limit_mb=2048 -timeout=10 \
    -artifact_prefix="artifacts/$t/" -print_final_stats=1 > "artifacts/$t/log" 2>&1 || rc=$?
  {
    echo "fuzz: $t for ${seconds}s"
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb)|panicked|ERROR|Test unit written' \
      "artifacts/$t/log" | head -n 20 || true
    if [ "$rc" -ne 0 ]; then
      tail -n 40 "artifacts/$t/log"
      echo "fuzz: $t found a crash (fuzz/artifacts/$t)"
    fi
  } > "artifacts/$t/summary"
  return "$rc"
}

# As many targets at once as there are cores (each libFuzzer run is one thread).
parallel=$(nproc)
failed=()
for ((i = 0; i < ${#targets[@]}; i += parallel)); do
  pids=()
  batch=("${targets[@]:i:parallel}")
  for t in "${batch[@]}"; do
    fuzz_one "$t" &
    pids+=($!)
  done
  for j in "${!batch[@]}"; do
    wait "${pids[$j]}" || failed+=("${batch[$j]}")
    cat "artifacts/${batch[$j]}/summary"
  done
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: crashes in ${failed[*]}"
  exit 1
fi
