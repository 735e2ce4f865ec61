//! Few-shot prompt building per episode: every image's LQAE ids turned into token text
//! (MiniLM vocabulary, the suite's token settings) and the episode's prompt assembled, for the
//! largest cells of the paper's table (5-way 5 shots with induction; 5-way 1 shot repeated 5
//! times) and the smallest (2-way 1 shot). Throughput in episodes.
//!
//! `cargo bench --bench fewshot` (add `-- --quick` for a fast pass). The MiniLM asset is
//! fetched once. Ids are seeded random over the whole vocabulary, 64 per image (lqae-small's
//! 8x8 grid), so sub-word and special filtering do real work.

use criterion::{BenchmarkId, Criterion, Throughput};
use lqae::eval::kinds::fewshot::{
    image_text, prompt, sweep_points, Episode, Shot, Templates, TextRule, TokenSettings,
};
use std::collections::HashMap;
use std::hint::black_box;

fn episode(ways: usize, shots: usize, repeats: usize, induction: bool) -> Episode {
    let classes: Vec<String> = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat"][..ways]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let shot = |c: usize, k: usize| Shot {
        image: format!("{c}-{k}"),
        label: classes[c].clone(),
    };
    Episode {
        ways,
        induction,
        shots,
        repeats,
        index: 0,
        support: (0..ways)
            .flat_map(|c| (0..shots).map(move |k| (c, k)))
            .map(|(c, k)| shot(c, k))
            .collect(),
        query: shot(0, shots),
        classes,
        names: None,
    }
}

fn bench(c: &mut Criterion) {
    let dir = lqae::assets::ensure(&lqae::assets::MINILM).expect("MiniLM asset");
    let lm = lqae::lm::FrozenLm::load(&dir, &candle_core::Device::Cpu).expect("MiniLM");
    let vocab = lm.vocab();
    let templates = Templates::default();
    let point = sweep_points(&TokenSettings::default()).remove(0);
    let rule = TextRule::default();
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut g = c.benchmark_group("fewshot_prompt");
    for (name, ep) in [
        ("2-way-1-shot", episode(2, 1, 0, false)),
        ("5-way-5-shot-induction", episode(5, 5, 0, true)),
        ("5-way-1-shot-5-repeats", episode(5, 1, 5, true)),
    ] {
        let images: Vec<String> = ep
            .support
            .iter()
            .chain(std::iter::once(&ep.query))
            .map(|s| s.image.clone())
            .collect();
        let ids: HashMap<String, Vec<u32>> = images
            .iter()
            .map(|k| {
                let v = (0..64)
                    .map(|_| (next() % vocab.len() as u64) as u32)
                    .collect();
                (k.clone(), v)
            })
            .collect();
        g.throughput(Throughput::Elements(1));
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                let texts: HashMap<String, String> = ids
                    .iter()
                    .map(|(k, v)| (k.clone(), image_text(v, vocab, &point, &rule)))
                    .collect();
                black_box(prompt(&ep, &texts, &templates))
            })
        });
    }
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
