#!/usr/bin/env bash
# Run every fuzz target in fuzz/ for a short while and fail if any crashes.
#
#   FUZZ_SECONDS=30 bash scripts/fuzz-smoke.sh            # every target, 30 s each
#   FUZZ_SECONDS=600 bash scripts/fuzz-smoke.sh classify   # one target, longer
#
# Installs cargo-fuzz when it is missing. cargo fuzz passes nightly-only
# flags (-Zsanitizer=address); RUSTC_BOOTSTRAP=1 lets the stable toolchain
# accept them. Builds with debug assertions, so integer overflow panics.
# The corpus grows in fuzz/corpus/TARGET (not committed); fuzz/seeds/TARGET
# holds committed starting inputs and fuzz/dicts/TARGET.dict tokens. A
# crash leaves its input in fuzz/artifacts/TARGET/: turn it into a test in
# tests/regressions.rs.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-30}"
if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  targets=(classify manifest_open nbd_reply units)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1

cargo fuzz build --debug-assertions

failed=()
summary=()
for target in "${targets[@]}"; do
  corpus="fuzz/corpus/$target"
  mkdir -p "$corpus"
  dirs=("$corpus")
  [ -d "fuzz/seeds/$target" ] && dirs+=("fuzz/seeds/$target")
  options=(-max_total_time="$seconds" -timeout=10 -print_final_stats=1)
  [ -f "fuzz/dicts/$target.dict" ] && options+=(-dict="fuzz/dicts/$target.dict")
  log="$(mktemp)"
  echo "fuzzing $target for ${seconds}s"
  if cargo fuzz run --debug-assertions "$target" "${dirs[@]}" -- "${options[@]}" >"$log" 2>&1; then
    result="ok"
  else
    result="CRASH"
    failed+=("$target")
    grep -E "panicked|ERROR|SUMMARY|Test unit written|artifact" "$log" | head -20 || true
  fi
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
  summary+=("$(printf '%-14s %12s executions  %s' "$target" "${runs:-?}" "$result")")
  rm -f "$log"
done

echo
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz targets crashed: ${failed[*]} (inputs in fuzz/artifacts/)"
  exit 1
fi
