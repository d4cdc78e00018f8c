#!/usr/bin/env bash
# blockstamp and fio side by side on the same kind of file, printing ratios
# (blockstamp / fio). Performance is measured here, never in timed tests.
#
#   scripts/bench-vs-fio.sh [DISK_DIR] [SIZE]
#   ROUNDS=5 scripts/bench-vs-fio.sh      # alternate 5 times, print medians
#
# DISK_DIR (default: a temp dir under /var/tmp) must be on a real filesystem
# (O_DIRECT); the buffered comparisons run in /dev/shm. These machines are
# shared and noisy: one round can move ±25%, so quote one run's table, and
# prefer ROUNDS>1, which runs fio and blockstamp alternately on fresh files
# and prints the median of each column (ratio = median / median).
set -euo pipefail
cd "$(dirname "$0")/.."

disk_dir=${1:-$(mktemp -d /var/tmp/bs-bench.XXXXXX)}
size=${2:-1G}
rounds=${ROUNDS:-1}
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
# On /dev/shm, fallocate reserves pages without touching them, and in a VM
# whose host backs guest memory lazily (free page reporting hands freed
# pages back) the first touch of each page costs a host fault: runs then
# swing 5x with which pages the allocator happened to hand out. Both tools'
# files are written through once first, so what is measured is the tool.
pretouch() { rm -f "$1"; dd if=/dev/zero of="$1" bs=1M count="$(numfmt --from=iec "$size" | awk '{print int($1/1048576)}')" status=none; }

iops_of() { sed -n 's/.* \([0-9]*\) IOPS.*/\1/p' <<<"$1" | head -1; }

# Columns, one value per round.
declare -A col
add() { col[$1]="${col[$1]:-} $2"; }

for round in $(seq "$rounds"); do
  [ "$rounds" -gt 1 ] && echo "round $round of $rounds" >&2

  # 1. 4 KiB random writes at queue depth 32, O_DIRECT, on disk: IOPS.
  prealloc "$disk_dir/bench-fio.img"
  out=$(fio_job w "$disk_dir/bench-fio.img" 1 randwrite)
  add disk_w_fio "$(json_field "$out" "d['jobs'][0]['write']['iops']")"
  prealloc "$disk_dir/bench-bs.img"; rm -f "$disk_dir/bench-bs.m"
  add disk_w_bs "$(iops_of "$($bs write "$disk_dir/bench-bs.img" --manifest "$disk_dir/bench-bs.m" --queue-depth 32)")"

  # 2. Verify read-back on disk: bytes/s.
  prealloc "$disk_dir/bench-fiov.img"
  fio_job wv "$disk_dir/bench-fiov.img" 1 randwrite --verify=crc32c --do_verify=0 >/dev/null
  out=$(fio_job v "$disk_dir/bench-fiov.img" 1 randwrite --verify=crc32c --verify_only=1)
  add disk_v_fio "$(json_field "$out" "d['jobs'][0]['read']['bw_bytes']/1e6")"
  $bs verify "$disk_dir/bench-bs.img" --manifest "$disk_dir/bench-bs.m" --json "$disk_dir/bench-bs.json" >/dev/null
  add disk_v_bs "$(json_field "$disk_dir/bench-bs.json" "d['throughput_bytes_per_s']/1e6")"

  # 3. /dev/shm, buffered: write throughput with verification data.
  pretouch "$shm_dir/fio.img"
  out=$(fio_job ws "$shm_dir/fio.img" 0 randwrite --verify=crc32c --do_verify=0)
  add shm_w_fio "$(json_field "$out" "d['jobs'][0]['write']['bw_bytes']/1e6")"
  pretouch "$shm_dir/bs.img"; rm -f "$disk_dir/bench-shm.m"
  iops=$(iops_of "$($bs write "$shm_dir/bs.img" --manifest "$disk_dir/bench-shm.m" --queue-depth 32 2>/dev/null)")
  add shm_w_bs "$(python3 -c "print($iops*4096/1e6)")"

  # 4. /dev/shm verify read-back.
  out=$(fio_job vs "$shm_dir/fio.img" 0 randwrite --verify=crc32c --verify_only=1)
  add shm_v_fio "$(json_field "$out" "d['jobs'][0]['read']['bw_bytes']/1e6")"
  $bs verify "$shm_dir/bs.img" --manifest "$disk_dir/bench-shm.m" --json "$disk_dir/bench-shm.json" >/dev/null 2>&1
  add shm_v_bs "$(json_field "$disk_dir/bench-shm.json" "d['throughput_bytes_per_s']/1e6")"
done

median() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{v[NR]=$1} END {m=(NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2; printf "%.0f", m}'; }

label=$([ "$rounds" -gt 1 ] && echo "median of $rounds" || echo "one run")
printf '\n%-46s %12s %12s %8s\n' "measurement (size $size, $label)" blockstamp fio ratio
row() { # title key
  local ours theirs
  ours=$(median "${col[${2}_bs]}"); theirs=$(median "${col[${2}_fio]}")
  printf '%-46s %12s %12s %8s\n' "$1" "$ours" "$theirs" "$(python3 -c "print(f'{$ours/$theirs:.2f}x')")"
}
row "disk  4 KiB randwrite QD32 O_DIRECT (IOPS)" disk_w
row "disk  verify read-back (MB/s)" disk_v
row "shm   4 KiB randwrite QD32 buffered (MB/s)" shm_w
row "shm   verify read-back (MB/s)" shm_v
if [ "$rounds" -gt 1 ]; then
  echo
  for key in disk_w disk_v shm_w shm_v; do
    printf '%-8s blockstamp:%s\n%-8s fio:%s\n' "$key" "$(printf ' %.0f' ${col[${key}_bs]})" "" "$(printf ' %.0f' ${col[${key}_fio]})"
  done
fi
