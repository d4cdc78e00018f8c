//! The workload's block choice, per write: the burst scheduler over a 1 GiB
//! and a 1 TiB target of 4 KiB blocks, at full coverage (a pass, or the
//! start of a time-based run) and at 0.01% (`--coverage 0.0001`). The cost
//! must follow the writes chosen, not the target's block count.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

use blockstamp::workload::{BurstPlan, BurstWorkload, Scatter, Workload, WriteOp};

const GIB_BLOCKS: u64 = 1 << 18;
const TIB_BLOCKS: u64 = 1 << 28;
/// Writes chosen per measured iteration.
const WRITES: u64 = 32_768;

fn plan(block_count: u64, coverage: f64, scatter: Scatter) -> BurstPlan {
    BurstPlan {
        block_count,
        burst: 32,
        scatter,
        io_blocks: (1, 1),
        overwrite: 0.0,
        coverage,
        passes: None,
        seed: 7,
        discard: 0.0,
        zero: 0.0,
    }
}

/// Build the workload and choose `WRITES` writes: what a run pays before
/// and during its first `WRITES` writes.
fn choose(plan: &BurstPlan) -> u64 {
    let mut workload = BurstWorkload::new(plan.clone());
    let mut burst: Vec<WriteOp> = Vec::with_capacity(plan.burst);
    let mut chosen = 0;
    while chosen < WRITES && workload.next_burst(&mut burst) {
        chosen += burst.len() as u64;
        black_box(&burst);
    }
    chosen
}

fn block_choice(c: &mut Criterion) {
    let mut group = c.benchmark_group("workload");
    group.throughput(Throughput::Elements(WRITES));
    for (target, blocks) in [("1GiB", GIB_BLOCKS), ("1TiB", TIB_BLOCKS)] {
        for (coverage_name, coverage) in [("full", 1.0), ("0.0001", 0.0001)] {
            for scatter in [Scatter::Random, Scatter::Stride] {
                let plan = plan(blocks, coverage, scatter);
                let name = format!("{target}/coverage-{coverage_name}/{scatter:?}").to_lowercase();
                group.bench_function(name, |b| b.iter(|| choose(&plan)));
            }
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(3)).warm_up_time(std::time::Duration::from_secs(1));
    targets = block_choice
}
criterion_main!(benches);
