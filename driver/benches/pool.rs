//! ns per frame for alloc + free in bursts of 32 (the target is ≤ 20 ns: docs/architecture.md).
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use zcstack_driver::{Pool, PoolConfig};

fn bursts(c: &mut Criterion) {
    let pool = PoolConfig::new().frames(4096).build().unwrap();
    let mut frames = Vec::with_capacity(32);
    let mut g = c.benchmark_group("pool");
    g.throughput(Throughput::Elements(32));
    g.bench_function("alloc+free burst of 32", |b| {
        b.iter(|| {
            let got = pool.alloc_burst(32, &mut frames);
            assert_eq!(got, 32);
            Pool::free_burst(&mut frames);
        })
    });
    g.bench_function("alloc+free one at a time x32", |b| {
        b.iter(|| {
            for _ in 0..32 {
                let f = pool.alloc().unwrap();
                std::hint::black_box(&f);
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bursts);
criterion_main!(benches);
