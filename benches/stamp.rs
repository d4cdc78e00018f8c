//! Stamp throughput: building blocks (the write path's CPU cost) and
//! checking them (the verify path's), per core.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

use blockstamp::stamp::{RunFormat, WriteStamp, block_is_intact, build_block};

fn stamps(c: &mut Criterion) {
    let mut group = c.benchmark_group("stamp");
    for block_size in [4096u32, 65536] {
        let format = RunFormat::new(0x5eed, block_size);
        // Enough blocks to fall out of L1/L2 like real IO buffers do.
        let blocks = (1 << 20) / block_size as usize;
        let mut buffer = vec![0u8; blocks * block_size as usize];
        group.throughput(Throughput::Bytes(buffer.len() as u64));
        group.bench_function(format!("build/{}", block_size), |b| {
            b.iter(|| {
                for (i, block) in buffer.chunks_exact_mut(block_size as usize).enumerate() {
                    let write = WriteStamp {
                        block: i as u64,
                        generation: 3,
                        write_seq: 9,
                        write_time_s: 1,
                    };
                    build_block(&format, &write, block);
                }
                black_box(&buffer);
            })
        });
        group.bench_function(format!("check/{}", block_size), |b| {
            b.iter(|| {
                let intact = buffer
                    .chunks_exact(block_size as usize)
                    .enumerate()
                    .all(|(i, block)| block_is_intact(&format, i as u64, 3, block));
                assert!(black_box(intact));
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3)).warm_up_time(std::time::Duration::from_secs(1));
    targets = stamps
}
criterion_main!(benches);
