//! Sync vs io_uring engine: 4 KiB random writes at queue depth 32 on a
//! 64 MiB O_DIRECT image in the temp dir. Short on purpose (about 15 s):
//!
//!     cargo bench --bench engine
//!
//! The image is written through once first, so the measured writes
//! overwrite allocated blocks instead of timing the filesystem's allocator.
//! On a shared VM disk both engines are bound by the device, so after each
//! criterion measurement the bench also prints the CPU time (all threads of
//! the process, io_uring workers included) each write cost.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use blockstamp::engine::sync::SyncEngine;
use blockstamp::engine::uring::{self, UringEngine};
use blockstamp::engine::{Engine, Io, IoKind};
use blockstamp::storage::file::FileTarget;
use blockstamp::storage::{OpenRequest, Target};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const BLOCK: usize = 4096;
const QUEUE_DEPTH: usize = 32;
const IMAGE_BYTES: u64 = 64 << 20;

fn prefilled_image(dir: &tempfile::TempDir) -> Arc<dyn Target> {
    let path = dir.path().join("bench.img");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0x5a; 1 << 20];
    for _ in 0..IMAGE_BYTES / chunk.len() as u64 {
        file.write_all(&chunk).unwrap();
    }
    file.sync_all().unwrap();
    let request = OpenRequest {
        write: true,
        create_size: None,
        direct: true,
        force: false,
    };
    let target = FileTarget::open(&path, "bench.img", &request).unwrap();
    assert!(
        target.info().direct_io,
        "the bench needs a TMPDIR with O_DIRECT"
    );
    Arc::new(target)
}

/// `count` random 4 KiB writes keeping `QUEUE_DEPTH` in flight.
fn random_writes(engine: &mut dyn Engine, count: u64, seed: &mut u64) -> Duration {
    let blocks = IMAGE_BYTES / BLOCK as u64;
    let start = Instant::now();
    let mut submitted = 0;
    while submitted < count || engine.in_flight() > 0 {
        while engine.in_flight() < engine.queue_depth() && submitted < count {
            // xorshift64: cheap, and the same sequence for both engines.
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            let offset = (*seed % blocks) * BLOCK as u64;
            let buf = engine.take_buffer(BLOCK);
            let io = Io {
                id: submitted,
                kind: IoKind::Write { offset, fua: false },
                buf,
                stamps: None,
            };
            engine.submit(io).unwrap();
            submitted += 1;
        }
        engine.kick().unwrap();
        for completion in engine.complete(1).unwrap() {
            completion.result.unwrap();
            engine.recycle(completion.buf);
        }
    }
    start.elapsed()
}

/// The process's user + system CPU time so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut usage), 0);
        usage
    };
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

/// Print writes per second and CPU time per write over 20000 writes.
fn report_cpu_per_write(name: &str, engine: &mut dyn Engine, seed: &mut u64) {
    const WRITES: u64 = 20_000;
    let cpu_before = cpu_time();
    let wall = random_writes(engine, WRITES, seed);
    let cpu = cpu_time() - cpu_before;
    eprintln!(
        "{name}: {:.0} writes/s, {:.1} µs CPU per write ({WRITES} writes)",
        WRITES as f64 / wall.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / WRITES as f64
    );
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let target = prefilled_image(&dir);
    let mut group = c.benchmark_group("random_write_4k_qd32");
    group.throughput(Throughput::Elements(1));
    let mut seed = 0x9e37_79b9_7f4a_7c15;

    let mut engine = SyncEngine::new(Arc::clone(&target), QUEUE_DEPTH);
    group.bench_function("sync", |b| {
        b.iter_custom(|iters| random_writes(&mut engine, iters, &mut seed))
    });
    report_cpu_per_write("sync", &mut engine, &mut seed);
    drop(engine);

    match uring::probe() {
        Ok(()) => {
            let mut engine = UringEngine::new(Arc::clone(&target), QUEUE_DEPTH, BLOCK).unwrap();
            group.bench_function("uring", |b| {
                b.iter_custom(|iters| random_writes(&mut engine, iters, &mut seed))
            });
            report_cpu_per_write("uring", &mut engine, &mut seed);
        }
        Err(why) => eprintln!("uring skipped: io_uring unavailable here ({why})"),
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
