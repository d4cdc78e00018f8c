#!/usr/bin/env bash
# blockstamp and fio side by side on the same kind of file, one run each,
# printing ratios (blockstamp / fio). Performance is measured here, never in
# timed tests; these machines are shared and noisy, so quote one run's ratios.
#
#   scripts/bench-vs-fio.sh [DISK_DIR] [SIZE]
#
# DISK_DIR (default: a temp dir under /var/tmp) must be on a real filesystem
# (O_DIRECT); the buffered comparisons run in /dev/shm.
set -euo pipefail
cd "$(dirname "$0")/.."

disk_dir=${1:-$(mktemp -d /var/tmp/bs-bench.XXXXXX)}
size=${2:-1G}
shm_dir=$(mktemp -d /dev/shm/bs-bench.XXXXXX)
trap 'rm -rf "$shm_dir" "$disk_dir"/bench-*' EXIT

command -v fio >/dev/null || { echo "installing fio"; apt-get install -y -qq fio >/dev/null; }
cargo build --release --quiet
bs=target/release/blockstamp

json_field() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }

fio_job() { # name file direct rw extra...
  local name=$1 file=$2 direct=$3 rw=$4; shift 4
  fio --name="$name" --filename="$file" --size="$size" --bs=4k --rw="$rw" \
      --ioengine=io_uring --iodepth=32 --direct="$direct" --output-format=json \
      --verify_state_save=0 --output="$file.$name.json" "$@" >/dev/null
  echo "$file.$name.json"
}

# Both tools start from a preallocated file of the same size (fio lays its
# file out with fallocate; blockstamp gets the same).
prealloc() { rm -f "$1"; fallocate -l "$size" "$1"; }

ratio() { python3 -c "print(f'{$1/$2:.2f}x')"; }

declare -a rows

# 1. 4 KiB random writes at queue depth 32, O_DIRECT, on disk: IOPS.
prealloc "$disk_dir/bench-fio.img"
out=$(fio_job w "$disk_dir/bench-fio.img" 1 randwrite)
fio_iops=$(json_field "$out" "d['jobs'][0]['write']['iops']")
prealloc "$disk_dir/bench-bs.img"; rm -f "$disk_dir/bench-bs.m"
bs_line=$($bs write "$disk_dir/bench-bs.img" --manifest "$disk_dir/bench-bs.m" --queue-depth 32)
bs_iops=$(sed -n 's/.* \([0-9]*\) IOPS.*/\1/p' <<<"$bs_line" | head -1)
rows+=("disk  4 KiB randwrite QD32 O_DIRECT (IOPS)|$bs_iops|$(printf %.0f "$fio_iops")|$(ratio "$bs_iops" "$fio_iops")")

# 2. Verify read-back on disk: bytes/s.
prealloc "$disk_dir/bench-fiov.img"
fio_job wv "$disk_dir/bench-fiov.img" 1 randwrite --verify=crc32c --do_verify=0 >/dev/null
out=$(fio_job v "$disk_dir/bench-fiov.img" 1 randwrite --verify=crc32c --verify_only=1)
fio_read=$(json_field "$out" "d['jobs'][0]['read']['bw_bytes']")
$bs verify "$disk_dir/bench-bs.img" --manifest "$disk_dir/bench-bs.m" --json "$disk_dir/bench-bs.json" >/dev/null
bs_read=$(json_field "$disk_dir/bench-bs.json" "d['throughput_bytes_per_s']")
rows+=("disk  verify read-back (MB/s)|$(ratio "$bs_read" 1e6 | tr -d x)|$(ratio "$fio_read" 1e6 | tr -d x)|$(ratio "$bs_read" "$fio_read")")

# 3. /dev/shm, buffered: write throughput with verification data.
out=$(fio_job ws "$shm_dir/fio.img" 0 randwrite --verify=crc32c --do_verify=0)
fio_write=$(json_field "$out" "d['jobs'][0]['write']['bw_bytes']")
fio_shm_iops=$(json_field "$out" "d['jobs'][0]['write']['iops']")
prealloc "$shm_dir/bs.img"; rm -f "$disk_dir/bench-shm.m"
bs_line=$($bs write "$shm_dir/bs.img" --manifest "$disk_dir/bench-shm.m" --queue-depth 32 2>/dev/null)
bs_shm_iops=$(sed -n 's/.* \([0-9]*\) IOPS.*/\1/p' <<<"$bs_line" | head -1)
bs_write=$(python3 -c "print($bs_shm_iops*4096)")
rows+=("shm   4 KiB randwrite QD32 buffered (MB/s)|$(ratio "$bs_write" 1e6 | tr -d x)|$(ratio "$fio_write" 1e6 | tr -d x)|$(ratio "$bs_write" "$fio_write")")

# 4. /dev/shm verify read-back.
out=$(fio_job vs "$shm_dir/fio.img" 0 randwrite --verify=crc32c --verify_only=1)
fio_read=$(json_field "$out" "d['jobs'][0]['read']['bw_bytes']")
$bs verify "$shm_dir/bs.img" --manifest "$disk_dir/bench-shm.m" --json "$disk_dir/bench-shm.json" >/dev/null 2>&1
bs_read=$(json_field "$disk_dir/bench-shm.json" "d['throughput_bytes_per_s']")
rows+=("shm   verify read-back (MB/s)|$(ratio "$bs_read" 1e6 | tr -d x)|$(ratio "$fio_read" 1e6 | tr -d x)|$(ratio "$bs_read" "$fio_read")")

printf '\n%-46s %12s %12s %8s\n' "measurement (size $size)" blockstamp fio ratio
for row in "${rows[@]}"; do
  IFS='|' read -r what ours theirs r <<<"$row"
  printf '%-46s %12s %12s %8s\n' "$what" "$ours" "$theirs" "$r"
done
