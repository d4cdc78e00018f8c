#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what the tests need that
# the machine may lack, then runs every test. CI runs this (via .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests drive: nbdkit and qemu-nbd serve NBD exports,
# losetup (mount) and mkfs.ext4 (e2fsprogs) build loop-device scenes.
missing=()
command -v nbdkit >/dev/null 2>&1 || missing+=(nbdkit)
command -v qemu-nbd >/dev/null 2>&1 || missing+=(qemu-utils)
command -v losetup >/dev/null 2>&1 || missing+=(mount)
command -v mkfs.ext4 >/dev/null 2>&1 || missing+=(e2fsprogs)
command -v fio >/dev/null 2>&1 || missing+=(fio)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cargo build --release --locked
cargo test --release --locked --all-targets

# Every finding class injected through the fault layer, caught and classified.
cargo run --release --locked -- selftest --block-size 512 --block-size 4KiB --block-size 64KiB
# Each fuzz target briefly (4 targets x 20 s); a crash fails the run.
FUZZ_SECONDS=20 bash scripts/fuzz-smoke.sh
