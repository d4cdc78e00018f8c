#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what the tests need that
# the machine may lack, then runs every test. CI runs this (via .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests drive: nbdkit and qemu-nbd serve NBD exports,
# losetup (mount) and mkfs.ext4 (e2fsprogs) build loop-device scenes, the
# shell of docs/WORKFLOWS.md waits for qemu-nbd with ps (procps).
missing=()
command -v nbdkit >/dev/null 2>&1 || missing+=(nbdkit)
command -v qemu-nbd >/dev/null 2>&1 || missing+=(qemu-utils)
command -v ps >/dev/null 2>&1 || missing+=(procps)
command -v losetup >/dev/null 2>&1 || missing+=(mount)
command -v mkfs.ext4 >/dev/null 2>&1 || missing+=(e2fsprogs)
command -v fio >/dev/null 2>&1 || missing+=(fio)
# Headless Chromium renders the HTML report for the screenshot test.
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
# xmllint validates the --junit files against tests/data/junit-10.xsd.
command -v xmllint >/dev/null 2>&1 || missing+=(libxml2-utils)
# ansible-core (below) is installed with pip, into a venv where the system
# Python is Debian's: python3-venv brings pip there.
ansible_venv="${XDG_CACHE_HOME:-$HOME/.cache}/blockstamp/ansible-venv"
[ -x "$ansible_venv/bin/ansible-playbook" ] && export PATH="$PATH:$ansible_venv/bin"
if { ! command -v ansible-playbook >/dev/null 2>&1 || ! python3 -c 'import prometheus_client' >/dev/null 2>&1; } \
  && ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  missing+=(python3-venv)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# ansible-core runs scripts/ansible/soak.yml against localhost in
# tests/ansible_playbook.rs; it comes from PyPI: with the machine's pip where
# that Python takes packages (pyenv, a venv), else in a venv of our own.
if ! command -v ansible-playbook >/dev/null 2>&1; then
  echo "installing: ansible-core (pip)"
  if python3 -m pip install -q ansible-core 2>/dev/null; then
    command -v pyenv >/dev/null 2>&1 && pyenv rehash
    scripts_dir="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
    [ -x "$scripts_dir/ansible-playbook" ] && export PATH="$PATH:$scripts_dir"
  else
    # An externally managed Python (PEP 668): install beside it, not into it.
    python3 -m venv "$ansible_venv" \
      && "$ansible_venv/bin/python" -m pip install -q ansible-core \
      && export PATH="$PATH:$ansible_venv/bin"
  fi
  hash -r
  if ! command -v ansible-playbook >/dev/null 2>&1; then
    # CI as the tests read it (tests/common/need.rs): set, and not "false" or "0".
    if [ -n "${CI:-}" ] && [ "${CI}" != "false" ] && [ "${CI}" != "0" ]; then
      echo "error: ansible-core could not be installed (pip install ansible-core); the playbook test needs it" >&2
      exit 1
    fi
    echo "warning: ansible-core not installed; the playbook test will be skipped" >&2
  fi
fi

# prometheus_client (the Prometheus project's Python client) parses the
# --prometheus textfile in tests/outputs.rs; where the machine's Python takes
# no packages it goes into the venv above, and BLOCKSTAMP_PYTHON names it.
if ! python3 -c 'import prometheus_client.parser' >/dev/null 2>&1; then
  echo "installing: prometheus_client (pip)"
  if ! python3 -m pip install -q prometheus_client 2>/dev/null; then
    { [ -x "$ansible_venv/bin/python" ] || python3 -m venv "$ansible_venv"; } \
      && "$ansible_venv/bin/python" -m pip install -q prometheus_client \
      && export BLOCKSTAMP_PYTHON="$ansible_venv/bin/python"
  fi
fi
if [ -z "${BLOCKSTAMP_PYTHON:-}" ] && [ -x "$ansible_venv/bin/python" ] \
  && ! python3 -c 'import prometheus_client.parser' >/dev/null 2>&1; then
  export BLOCKSTAMP_PYTHON="$ansible_venv/bin/python"
fi

cargo build --release --locked
cargo test --release --locked --all-targets

# Every finding class injected through the fault layer, caught and classified.
cargo run --release --locked -- selftest --block-size 512 --block-size 4KiB --block-size 64KiB
# Each fuzz target briefly (4 targets x 20 s); a crash fails the run.
FUZZ_SECONDS=20 bash scripts/fuzz-smoke.sh
