#!/usr/bin/env bash
# blockstamp and fio side by side on the same kind of file, printing ratios
# (blockstamp / fio). Performance is measured here, never in timed tests.
#
#   scripts/bench-vs-fio.sh [DISK_DIR] [SIZE]
#   ROUNDS=5 scripts/bench-vs-fio.sh      # alternate 5 times, print medians
#   ROWS=sparse ROUNDS=3 scripts/bench-vs-fio.sh   # only the sparse rows
#   BLOCKSTAMP=/path/to/blockstamp scripts/bench-vs-fio.sh   # another build
#   ROWS=journal ROUNDS=5 scripts/bench-vs-fio.sh   # the journal's cost
#
# ROWS picks the row groups: `dense` (rows 1-4: preallocated and /dev/shm
# files at SIZE), `sparse` (rows 5-7: a fresh sparse SIZE file, and a
# 1 TiB sparse file at 0.01% coverage, written and verified, timed whole
# process); `journal` (rows 8-11: a preallocated and a fresh sparse SIZE
# file, blockstamp with and without its journal against fio --end_fsync=1,
# whole process; blockstamp's manifest syncs each sleep JOURNAL_SYNC_MS
# first, default 50, the stand-in for a disk whose flushes are slow);
# default: dense and sparse. The sparse rows hold at most SIZE of data on
# DISK_DIR at a time (plus ~0.6 GiB for the 1 TiB rows' manifest and data).
#
# `jobs` (needs root; not in the default) compares `--jobs 1` and `--jobs 2`
# with fio's `--numjobs 1` and `2` on a loop device over a SIZE file in a
# tmpfs the script mounts (a fast block device with the real O_DIRECT path;
# SIZE of memory): IOPS, whole-process CPU (user + sys) per 4 KiB write,
# and how busy the whole machine was (the loop device's kernel worker does
# its copies outside the process: at 100% another job cannot add IOPS).
# The total queue depth stays 32 (fio: `--iodepth` 32/N per job).
#
# DISK_DIR (default: a temp dir under /var/tmp) must be on a real filesystem
# (O_DIRECT); the buffered comparisons run in /dev/shm. These machines are
# shared and noisy: one round can move ±25%, so quote one run's table, and
# prefer ROUNDS>1, which runs fio and blockstamp alternately on fresh files
# and prints the median of each column (ratio = median / median).
set -euo pipefail
cd "$(dirname "$0")/.."

disk_dir=${1:-$(mktemp -d /var/tmp/bs-bench.XXXXXX)}
mkdir -p "$disk_dir"
size=${2:-1G}
rounds=${ROUNDS:-1}
rows=${ROWS:-dense sparse}
journal_sync_ms=${JOURNAL_SYNC_MS:-50}
shm_dir=$(mktemp -d /dev/shm/bs-bench.XXXXXX)
trap 'rm -rf "$shm_dir" "$disk_dir"/bench-*' EXIT

command -v fio >/dev/null || { echo "installing fio"; apt-get install -y -qq fio >/dev/null; }
# BLOCKSTAMP=path measures another build (an older one, to compare).
bs=${BLOCKSTAMP:-target/release/blockstamp}
[ -n "${BLOCKSTAMP:-}" ] || cargo build --release --quiet

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

# Whole-process seconds of a command (its output discarded).
seconds() {
  local t0; t0=$(date +%s%N)
  "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }
  python3 -c "print(($(date +%s%N) - $t0) / 1e9)"
}

# The 1 TiB rows: 4 KiB blocks, 0.01% of them (blockstamp's --coverage
# 0.0001 writes exactly this many; fio is told the same number of IOs).
tib_writes=$(python3 -c "print(round((1 << 40) / 4096 * 0.0001))")

# Columns, one value per round.
declare -A col
add() { col[$1]="${col[$1]:-} $2"; }
# The whole machine's CPU time so far (user, nice, system, irq, softirq,
# steal) and all of it, in ticks: two readings give how busy every core was.
cpu_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }
busy_pct() { # before after
  awk -v a="$1" -v b="$2" 'BEGIN {split(a, x, " "); split(b, y, " "); printf "%.0f", 100 * (y[1] - x[1]) / (y[2] - x[2])}'
}

for round in $(seq "$rounds"); do
  [ "$rounds" -gt 1 ] && echo "round $round of $rounds" >&2

  if [[ " $rows " == *" dense "* ]]; then
  # 1. 4 KiB random writes at queue depth 32, O_DIRECT, on disk: IOPS.
  prealloc "$disk_dir/bench-fio.img"
  out=$(fio_job w "$disk_dir/bench-fio.img" 1 randwrite)
  add disk_w_fio "$(json_field "$out" "d['jobs'][0]['write']['iops']")"
  rm -f "$disk_dir/bench-fio.img"
  prealloc "$disk_dir/bench-bs.img"; rm -f "$disk_dir/bench-bs.m"
  add disk_w_bs "$(iops_of "$($bs write "$disk_dir/bench-bs.img" --manifest "$disk_dir/bench-bs.m" --queue-depth 32)")"

  # 2. Verify read-back on disk: bytes/s.
  prealloc "$disk_dir/bench-fiov.img"
  fio_job wv "$disk_dir/bench-fiov.img" 1 randwrite --verify=crc32c --do_verify=0 >/dev/null
  out=$(fio_job v "$disk_dir/bench-fiov.img" 1 randwrite --verify=crc32c --verify_only=1)
  add disk_v_fio "$(json_field "$out" "d['jobs'][0]['read']['bw_bytes']/1e6")"
  rm -f "$disk_dir/bench-fiov.img"
  $bs verify "$disk_dir/bench-bs.img" --manifest "$disk_dir/bench-bs.m" --json "$disk_dir/bench-bs.json" >/dev/null
  add disk_v_bs "$(json_field "$disk_dir/bench-bs.json" "d['throughput_bytes_per_s']/1e6")"
  rm -f "$disk_dir/bench-bs.img"

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
  rm -f "$shm_dir/fio.img" "$shm_dir/bs.img"
  fi

  if [[ " $rows " == *" jobs "* ]]; then
  # 8. Writer jobs on a loop device over tmpfs: IOPS and CPU per write.
  if [ -z "${jobs_loop:-}" ]; then
    jobs_mnt=$(mktemp -d /tmp/bs-bench-jobs.XXXXXX)
    mount -t tmpfs -o size="$(( $(numfmt --from=iec "$size") / 1048576 + 64 ))M" tmpfs "$jobs_mnt"
    truncate -s "$size" "$jobs_mnt/disk"
    jobs_loop=$(losetup -f --show "$jobs_mnt/disk")
    trap 'losetup -d "$jobs_loop"; umount "$jobs_mnt"; rmdir "$jobs_mnt"; rm -rf "$shm_dir" "$disk_dir"/bench-*' EXIT
  fi
  writes=$(( $(numfmt --from=iec "$size") / 4096 ))
  for n in 1 2; do
    before=$(cpu_ticks)
    /usr/bin/time -f '%U %S' -o "$disk_dir/bench-time" fio --name=jobs --filename="$jobs_loop" \
      --size="$size" --io_size=$(( $(numfmt --from=iec "$size") / n )) --bs=4k --rw=randwrite \
      --ioengine=io_uring --iodepth=$(( 32 / n )) --numjobs="$n" --group_reporting --direct=1 \
      --output-format=json --output="$disk_dir/bench-jobs.json" >/dev/null
    add "jobs${n}_busy_fio" "$(busy_pct "$before" "$(cpu_ticks)")"
    add "jobs${n}_iops_fio" "$(json_field "$disk_dir/bench-jobs.json" "d['jobs'][0]['write']['iops']")"
    add "jobs${n}_cpu_fio" "$(awk -v w="$writes" '{print ($1 + $2) * 1e6 / w}' "$disk_dir/bench-time")"
    rm -f "$disk_dir/bench-jobs.m"
    before=$(cpu_ticks)
    out=$(/usr/bin/time -f '%U %S' -o "$disk_dir/bench-time" $bs write "$jobs_loop" \
      --manifest "$disk_dir/bench-jobs.m" --queue-depth 32 --jobs "$n" --force)
    add "jobs${n}_busy_bs" "$(busy_pct "$before" "$(cpu_ticks)")"
    add "jobs${n}_iops_bs" "$(iops_of "$out")"
    add "jobs${n}_cpu_bs" "$(awk -v w="$writes" '{print ($1 + $2) * 1e6 / w}' "$disk_dir/bench-time")"
    rm -f "$disk_dir/bench-jobs.m"
  done
  fi

  if [[ " $rows " == *" sparse "* ]]; then
  # 5. The default path: a fresh sparse file (what `blockstamp run
  # disk.img --size 1GiB` starts from), 4 KiB random writes at QD32,
  # O_DIRECT, whole process with the final flush (fio: --end_fsync=1).
  rm -f "$disk_dir/bench-sp-fio.img"; truncate -s "$size" "$disk_dir/bench-sp-fio.img"
  add sp_w_fio "$(seconds fio --name=sp --filename="$disk_dir/bench-sp-fio.img" --size="$size" \
    --fallocate=none --bs=4k --rw=randwrite --ioengine=io_uring --iodepth=32 --direct=1 --end_fsync=1)"
  rm -f "$disk_dir/bench-sp-fio.img" "$disk_dir/bench-sp-bs.img" "$disk_dir/bench-sp-bs.m"
  add sp_w_bs "$(seconds $bs write "$disk_dir/bench-sp-bs.img" --manifest "$disk_dir/bench-sp-bs.m" \
    --size "$size" --queue-depth 32)"
  rm -f "$disk_dir/bench-sp-bs.img" "$disk_dir/bench-sp-bs.m"

  # 6. A 1 TiB sparse file, 0.01% of its 4 KiB blocks written at random.
  # fio writes verification headers (crc32c) for row 7.
  rm -f "$disk_dir/bench-tib-fio.img"; truncate -s 1T "$disk_dir/bench-tib-fio.img"
  tib_fio=(fio --name=tib --filename="$disk_dir/bench-tib-fio.img" --size=1T --fallocate=none
    --bs=4k --rw=randwrite --ioengine=io_uring --iodepth=32 --direct=1 --number_ios="$tib_writes"
    --randrepeat=1 --verify=crc32c --verify_state_save=0)
  add tib_w_fio "$(seconds "${tib_fio[@]}" --do_verify=0 --end_fsync=1)"
  rm -f "$disk_dir/bench-tib-bs.img" "$disk_dir/bench-tib-bs.m"
  add tib_w_bs "$(seconds $bs write "$disk_dir/bench-tib-bs.img" --manifest "$disk_dir/bench-tib-bs.m" \
    --size 1TiB --coverage 0.0001 --queue-depth 32)"

  # 7. Verify of those 1 TiB images: fio re-reads and checks its writes
  # (the same offsets, replayed from its seed); blockstamp reads the
  # image's data extents and judges every block.
  add tib_v_fio "$(seconds "${tib_fio[@]}" --verify_only=1)"
  add tib_v_bs "$(seconds $bs verify "$disk_dir/bench-tib-bs.img" --manifest "$disk_dir/bench-tib-bs.m")"
  rm -f "$disk_dir/bench-tib-fio.img" "$disk_dir/bench-tib-bs.img" "$disk_dir/bench-tib-bs.m"
  fi

  if [[ " $rows " == *" journal "* ]]; then
  # The journal's cost where a manifest sync costs JOURNAL_SYNC_MS: the same
  # writes with and without it, against fio with its final fsync.
  for kind in prealloc sparse; do
    file="$disk_dir/bench-j-fio.img"; rm -f "$file"
    if [ "$kind" = prealloc ]; then fallocate -l "$size" "$file"; else truncate -s "$size" "$file"; fi
    fio_secs=$(seconds fio --name=j --filename="$file" --size="$size" --fallocate=none --bs=4k \
      --rw=randwrite --ioengine=io_uring --iodepth=32 --direct=1 --end_fsync=1)
    rm -f "$file"
    for mode in journal nojournal; do
      add "j_${kind}_${mode}_fio" "$fio_secs"
      file="$disk_dir/bench-j-bs.img"; rm -f "$file" "$disk_dir/bench-j-bs.m"
      if [ "$kind" = prealloc ]; then fallocate -l "$size" "$file"; else truncate -s "$size" "$file"; fi
      flag=(); [ "$mode" = nojournal ] && flag=(--no-journal)
      add "j_${kind}_${mode}_bs" "$(BLOCKSTAMP_TEST_MANIFEST_SYNC_MS=$journal_sync_ms seconds \
        $bs write "$file" --manifest "$disk_dir/bench-j-bs.m" --queue-depth 32 "${flag[@]}")"
      rm -f "$file" "$disk_dir/bench-j-bs.m"
    done
  done
  fi
done

median() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk -v digits="${2:-0}" '{v[NR]=$1} END {m=(NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2; printf "%.*f", digits, m}'; }

label=$([ "$rounds" -gt 1 ] && echo "median of $rounds" || echo "one run")
printf '\n%-52s %12s %12s %8s\n' "measurement (size $size, $label)" blockstamp fio ratio
row() { # title key [digits]
  [ -n "${col[${2}_bs]:-}" ] || return 0
  local ours theirs
  ours=$(median "${col[${2}_bs]}" "${3:-0}"); theirs=$(median "${col[${2}_fio]}" "${3:-0}")
  printf '%-52s %12s %12s %8s\n' "$1" "$ours" "$theirs" "$(python3 -c "print(f'{$ours/$theirs:.2f}x')")"
}
row "disk  4 KiB randwrite QD32 O_DIRECT (IOPS)" disk_w
row "disk  verify read-back (MB/s)" disk_v
row "shm   4 KiB randwrite QD32 buffered (MB/s)" shm_w
row "shm   verify read-back (MB/s)" shm_v
row "sparse $size randwrite QD32 O_DIRECT (s, lower wins)" sp_w 2
row "sparse 1 TiB at 0.01%: write (s, lower wins)" tib_w 2
row "sparse 1 TiB at 0.01%: verify (s, lower wins)" tib_v 2
row "loop/tmpfs randwrite QD32, 1 job (IOPS)" jobs1_iops
row "loop/tmpfs randwrite QD32, 2 jobs (IOPS)" jobs2_iops
row "loop/tmpfs CPU us per 4 KiB write, 1 job (lower wins)" jobs1_cpu 2
row "loop/tmpfs CPU us per 4 KiB write, 2 jobs (lower wins)" jobs2_cpu 2
row "loop/tmpfs every core busy, 1 job (% of the machine)" jobs1_busy
row "loop/tmpfs every core busy, 2 jobs (% of the machine)" jobs2_busy
row "journal, ${journal_sync_ms} ms syncs, preallocated $size (s)" j_prealloc_journal 2
row "--no-journal, preallocated $size (s)" j_prealloc_nojournal 2
row "journal, ${journal_sync_ms} ms syncs, fresh sparse $size (s)" j_sparse_journal 2
row "--no-journal, fresh sparse $size (s)" j_sparse_nojournal 2
if [ "$rounds" -gt 1 ]; then
  echo
  for key in disk_w disk_v shm_w shm_v sp_w tib_w tib_v jobs1_iops jobs2_iops jobs1_cpu jobs2_cpu jobs1_busy jobs2_busy \
    j_prealloc_journal j_prealloc_nojournal j_sparse_journal j_sparse_nojournal; do
    [ -n "${col[${key}_bs]:-}" ] || continue
    printf '%-8s blockstamp:%s\n%-8s fio:%s\n' "$key" "$(printf ' %.2f' ${col[${key}_bs]})" "" "$(printf ' %.2f' ${col[${key}_fio]})"
  done
fi
