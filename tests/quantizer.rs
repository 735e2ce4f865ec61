//! The language-codebook quantizer against brute force, its memory bound, ties, the
//! straight-through gradient and the commitment loss.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::randn;
use lqae::quantizer::{Quantizer, QuantizerConfig};
use rand::{rngs::StdRng, SeedableRng};

/// Cosine nearest neighbour in f64, both sides normalised, first index on ties.
fn brute_force(x: &[Vec<f32>], e: &[Vec<f32>]) -> (Vec<u32>, Vec<Vec<f64>>) {
    let norm = |v: &[f32]| {
        v.iter()
            .map(|a| (*a as f64) * (*a as f64))
            .sum::<f64>()
            .sqrt()
            .max(1e-12)
    };
    let mut ids = Vec::new();
    let mut sims_all = Vec::new();
    for xr in x {
        let nx = norm(xr);
        let sims: Vec<f64> = e
            .iter()
            .map(|er| {
                xr.iter()
                    .zip(er)
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum::<f64>()
                    / (nx * norm(er))
            })
            .collect();
        let mut best = 0;
        for (i, s) in sims.iter().enumerate() {
            if *s > sims[best] {
                best = i;
            }
        }
        ids.push(best as u32);
        sims_all.push(sims);
    }
    (ids, sims_all)
}

fn cfg(max_block_elems: usize) -> QuantizerConfig {
    QuantizerConfig {
        max_block_elems,
        ..Default::default()
    }
}

/// Both search paths: the fused CPU kernel and the candle-ops path other devices take.
fn both(max_block_elems: usize) -> [QuantizerConfig; 2] {
    [
        cfg(max_block_elems),
        QuantizerConfig {
            fused_cpu: false,
            ..cfg(max_block_elems)
        },
    ]
}

#[test]
fn equals_brute_force_and_never_holds_more_than_one_block() {
    let mut rng = StdRng::seed_from_u64(1);
    for &(n, v, d, block) in &[
        (300usize, 1000usize, 32usize, 5000usize),
        (37, 997, 16, 300),
        (5, 50, 8, 1 << 22),
        (64, 129, 4, 1),
    ] {
        let x = randn(&mut rng, &[n, d], 1.0);
        // Rows of very different norms: cosine, not dot product, must decide.
        let scale = randn(&mut rng, &[v, 1], 3.0).abs().unwrap();
        let e = randn(&mut rng, &[v, d], 1.0).broadcast_mul(&scale).unwrap();
        for c in both(block) {
            let q = Quantizer::new(&e, c).unwrap();
            let (ids, stats) = q.nearest_with_stats(&x).unwrap();
            assert!(
                stats.peak_block_elems <= block.max(1),
                "held {} > {block}",
                stats.peak_block_elems
            );
            let min_blocks = (n * v).div_ceil(block);
            assert!(
                stats.blocks >= min_blocks,
                "{} blocks for {n}x{v} with {block}",
                stats.blocks
            );
            let ids: Vec<u32> = ids.to_vec1().unwrap();
            let (want, sims) = brute_force(&x.to_vec2().unwrap(), &e.to_vec2().unwrap());
            for i in 0..n {
                if ids[i] != want[i] {
                    // Only an f32 near-tie may differ from the f64 reference.
                    let gap = sims[i][want[i] as usize] - sims[i][ids[i] as usize];
                    assert!(
                        gap < 1e-6,
                        "token {i}: got {} want {} (cosine gap {gap})",
                        ids[i],
                        want[i]
                    );
                }
            }
            let exact = ids.iter().zip(&want).filter(|(a, b)| a == b).count();
            assert!(exact >= n - 1, "{exact}/{n} exact");
        }
    }
}

#[test]
fn non_finite_input_is_an_error_not_token_zero() {
    let mut rng = StdRng::seed_from_u64(9);
    let e = randn(&mut rng, &[20, 4], 1.0);
    let x = Tensor::new(&[[1f32, 0., 0., 0.], [f32::NAN, 0., 1., 0.]], &Device::Cpu).unwrap();
    let err = Quantizer::new(&e, cfg(1 << 20))
        .unwrap()
        .nearest(&x)
        .unwrap_err()
        .to_string();
    assert!(err.contains("row 1") && err.contains("NaN"), "{err}");
}

#[test]
fn keeps_leading_shape() {
    let mut rng = StdRng::seed_from_u64(2);
    let e = randn(&mut rng, &[40, 8], 1.0);
    let x = randn(&mut rng, &[2, 3, 5, 8], 1.0);
    let q = Quantizer::new(&e, cfg(16)).unwrap();
    let out = q.quantize(&x).unwrap();
    assert_eq!(out.ids.dims(), &[2, 3, 5]);
    assert_eq!(out.codes.dims(), &[2, 3, 5, 8]);
    let flat = q.nearest(&x.reshape((30, 8)).unwrap()).unwrap();
    assert_eq!(
        out.ids.flatten_all().unwrap().to_vec1::<u32>().unwrap(),
        flat.to_vec1::<u32>().unwrap()
    );
    let e = q
        .nearest(&Tensor::zeros((3, 7), DType::F32, &Device::Cpu).unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("width 7") && e.contains("8"), "{e}");
}

#[test]
fn exact_ties_go_to_the_lowest_id_across_and_within_blocks() {
    // Unit rows with entries in {0, +-0.5}: every dot product with small-integer inputs is
    // exact in f32 whatever the summation order, so ties are real ties.
    let rows: [[f32; 4]; 8] = [
        [0.5, 0.5, 0.5, 0.5],   // 0
        [1.0, 0.0, 0.0, 0.0],   // 1
        [0.0, 1.0, 0.0, 0.0],   // 2
        [0.5, -0.5, 0.5, -0.5], // 3
        [1.0, 0.0, 0.0, 0.0],   // 4 = duplicate of 1
        [0.0, 0.0, 1.0, 0.0],   // 5
        [0.0, 1.0, 0.0, 0.0],   // 6 = duplicate of 2
        [0.5, 0.5, 0.5, 0.5],   // 7 = duplicate of 0
    ];
    let e = Tensor::new(&rows, &Device::Cpu).unwrap();
    // x = (3,0,0,0): rows 1 and 4 tie at 3 (row 0 scores 1.5) -> 1.
    // x = (0,2,0,0): rows 2 and 6 tie -> 2.
    // x = (1,1,1,1): rows 0 and 7 tie at 2 -> 0.
    // x = (1,1,0,0): rows 0, 1, 2, 7 all score 1 -> 0.
    let x = Tensor::new(
        &[
            [3f32, 0., 0., 0.],
            [0., 2., 0., 0.],
            [1., 1., 1., 1.],
            [1., 1., 0., 0.],
        ],
        &Device::Cpu,
    )
    .unwrap();
    for block in [1usize, 2, 3, 4, 5, 8, 1 << 20] {
        for c in both(block) {
            let ids: Vec<u32> = Quantizer::new(&e, c)
                .unwrap()
                .nearest(&x)
                .unwrap()
                .to_vec1()
                .unwrap();
            assert_eq!(
                ids,
                vec![1, 2, 0, 0],
                "block {block}, fused {}",
                c.fused_cpu
            );
        }
    }
}

#[test]
fn passes_raw_rows_with_straight_through_gradient_and_commitment_loss() {
    let mut rng = StdRng::seed_from_u64(3);
    let (n, v, d) = (12, 30, 6);
    let e = (randn(&mut rng, &[v, d], 1.0) * 5.0).unwrap();
    let x0 = randn(&mut rng, &[n, d], 1.0);
    let beta = 0.01;
    let q = Quantizer::new(
        &e,
        QuantizerConfig {
            beta,
            max_block_elems: 50,
            fused_cpu: true,
            sphere: false,
            ..Default::default()
        },
    )
    .unwrap();
    let x = Var::from_tensor(&x0).unwrap();
    let out = q.quantize(x.as_tensor()).unwrap();
    // Codes are the raw rows (norm about 5 sqrt(6)), not the normalised ones.
    let want_codes = e.index_select(&out.ids, 0).unwrap();
    assert_eq!(common::max_abs_diff(&out.codes, &want_codes), 0.0);
    assert!(common::max_abs_diff(&out.straight_through, &want_codes) < 1e-5);

    // d/dx sum(w * st) = w exactly: the estimator is the identity for gradients.
    let w = randn(&mut rng, &[n, d], 1.0);
    let g = (&out.straight_through * &w)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert_eq!(common::max_abs_diff(g.get(x.as_tensor()).unwrap(), &w), 0.0);

    // Commitment loss value and gradient: beta * mean((e - x)^2), d/dx = -2 beta (e - x) / numel.
    let diff = (&want_codes - &x0).unwrap();
    let want_loss = (diff.sqr().unwrap().mean_all().unwrap() * beta)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let got_loss = out.commit_loss.to_scalar::<f32>().unwrap();
    assert!(
        (got_loss - want_loss).abs() < 1e-6 * want_loss.max(1.0),
        "{got_loss} vs {want_loss}"
    );
    let g = out.commit_loss.backward().unwrap();
    let want_g = (diff * (-2.0 * beta / (n * d) as f64)).unwrap();
    assert!(common::max_abs_diff(g.get(x.as_tensor()).unwrap(), &want_g) < 1e-7);
    // The codebook is a constant.
    assert!(g.get(q.codebook()).is_none());
}

/// `sphere`: the value is still the raw code row, the gradient reaches only the input's
/// direction (`|e| / |x| (I - x^ x^T) w`), and the commitment is `beta |e|^2 (2 - 2 cos)`
/// averaged over elements; all three computed here row by row from plain vectors.
#[test]
fn sphere_trains_only_the_direction_and_commits_by_cosine() {
    let mut rng = StdRng::seed_from_u64(4);
    let (n, v, d) = (10, 25, 6);
    let e = (randn(&mut rng, &[v, d], 1.0) * 2.0).unwrap();
    let x0 = (randn(&mut rng, &[n, d], 1.0) * 40.0).unwrap();
    let beta = 0.25;
    let q = Quantizer::new(
        &e,
        QuantizerConfig {
            beta,
            max_block_elems: 50,
            fused_cpu: true,
            sphere: true,
            ..Default::default()
        },
    )
    .unwrap();
    let x = Var::from_tensor(&x0).unwrap();
    let out = q.quantize(x.as_tensor()).unwrap();
    let want_codes = e.index_select(&out.ids, 0).unwrap();
    assert!(common::max_abs_diff(&out.straight_through, &want_codes) < 1e-5);

    let w = randn(&mut rng, &[n, d], 1.0);
    let g = (&out.straight_through * &w)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let got_g: Vec<Vec<f32>> = g.get(x.as_tensor()).unwrap().to_vec2().unwrap();
    let xs: Vec<Vec<f32>> = x0.to_vec2().unwrap();
    let es: Vec<Vec<f32>> = want_codes.to_vec2().unwrap();
    let ws: Vec<Vec<f32>> = w.to_vec2().unwrap();
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(p, q)| (p * q) as f64).sum::<f64>();
    let mut want_loss = 0.0;
    for i in 0..n {
        let (xn, en) = (dot(&xs[i], &xs[i]).sqrt(), dot(&es[i], &es[i]).sqrt());
        let xw = dot(&xs[i], &ws[i]) / xn;
        for k in 0..d {
            let want = en / xn * (ws[i][k] as f64 - xs[i][k] as f64 / xn * xw);
            assert!(
                (got_g[i][k] as f64 - want).abs() < 1e-5,
                "row {i}: {} vs {want}",
                got_g[i][k]
            );
        }
        let cos = dot(&xs[i], &es[i]) / (xn * en);
        want_loss += en * en * (2.0 - 2.0 * cos);
    }
    want_loss *= beta / (n * d) as f64;
    let got_loss = out.commit_loss.to_scalar::<f32>().unwrap() as f64;
    assert!(
        (got_loss - want_loss).abs() < 1e-5 * want_loss,
        "{got_loss} vs {want_loss}"
    );
    // The commitment does not depend on the input's scale.
    let out3 = q.quantize(&(&x0 * 3.0).unwrap()).unwrap();
    let l3 = out3.commit_loss.to_scalar::<f32>().unwrap() as f64;
    assert!((l3 - got_loss).abs() < 1e-5 * got_loss);
}

#[test]
fn real_minilm_rows_quantize_to_themselves() {
    let lm = lqae::lm::FrozenLm::load(&common::minilm_dir(), &Device::Cpu).unwrap();
    let q = Quantizer::new(lm.word_embeddings(), QuantizerConfig::default()).unwrap();
    assert_eq!(q.vocab_size(), 30522);
    let ids = lm
        .tokenize("a photo of a sneaker on a white background", false)
        .unwrap();
    let ids_t = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap();
    // Scaled rows: cosine ignores the scale.
    let x = (q.lookup(&ids_t).unwrap() * 3.7).unwrap();
    let got: Vec<u32> = q.nearest(&x).unwrap().to_vec1().unwrap();
    assert_eq!(got, ids);
    // The mask token's own row is its nearest code too (every row may be chosen, specials included).
    let m = q
        .lookup(&Tensor::new(&[lm.mask_id()], &Device::Cpu).unwrap())
        .unwrap();
    assert_eq!(
        q.nearest(&m).unwrap().to_vec1::<u32>().unwrap(),
        vec![lm.mask_id()]
    );
}

/// The f64 arg-max of `x . normed` over the quantizer's stored normalised codebook, summed in
/// index order, lowest id on an exact tie: what the search's rule promises.
fn exact_argmax(x: &[Vec<f32>], normed: &[Vec<f32>]) -> Vec<u32> {
    x.iter()
        .map(|xr| {
            let mut best = (f64::NEG_INFINITY, 0u32);
            for (j, er) in normed.iter().enumerate() {
                let s: f64 = xr.iter().zip(er).map(|(a, b)| *a as f64 * *b as f64).sum();
                if s > best.0 {
                    best = (s, j as u32);
                }
            }
            best.1
        })
        .collect()
}

/// Both search paths under each tile budget give `want`.
fn same_under_every_tiling(e: &Tensor, x: &Tensor, want: &[u32], blocks: &[usize]) {
    for &block in blocks {
        for c in both(block) {
            let ids: Vec<u32> = Quantizer::new(e, c)
                .unwrap()
                .nearest(x)
                .unwrap()
                .to_vec1()
                .unwrap();
            assert_eq!(ids, want, "block {block}, fused {}", c.fused_cpu);
        }
    }
}

#[test]
fn near_ties_are_settled_in_f64_whatever_the_tiling() {
    // Codes a few 1e-7 apart around one direction: their cosines to an input differ by about an
    // f32 dot product's rounding (384 terms), so the f32 order alone is an accident of the sum.
    let mut rng = StdRng::seed_from_u64(35);
    let (n, v, d) = (96, 48, 384);
    let base = randn(&mut rng, &[1, d], 1.0 / (d as f32).sqrt());
    let e = base
        .broadcast_add(&randn(&mut rng, &[v, d], 3e-7 / (d as f32).sqrt()))
        .unwrap();
    let x = base
        .broadcast_add(&randn(&mut rng, &[n, d], 0.3 / (d as f32).sqrt()))
        .unwrap();
    let q = Quantizer::new(&e, QuantizerConfig::default()).unwrap();
    let normed: Vec<Vec<f32>> = q.normed().to_vec2().unwrap();
    let want = exact_argmax(&x.to_vec2().unwrap(), &normed);
    // The data exercise the rule: the f32 scores alone (margin 0) pick another code somewhere.
    let plain: Vec<u32> = Quantizer::new(
        &e,
        QuantizerConfig {
            tie_margin: 0.0,
            ..Default::default()
        },
    )
    .unwrap()
    .nearest(&x)
    .unwrap()
    .to_vec1()
    .unwrap();
    let differ = plain.iter().zip(&want).filter(|(a, b)| a != b).count();
    eprintln!("{differ} of {n} differ in f32");
    assert!(
        differ > 0,
        "no near tie flipped in f32: the test data are too easy"
    );
    same_under_every_tiling(&e, &x, &want, &[1, 7, 48, 1000, 3 * 48 * 96, 1 << 22]);
    // A margin out of range is a named setting error.
    let err = Quantizer::new(
        &e,
        QuantizerConfig {
            tie_margin: 2.0,
            ..Default::default()
        },
    )
    .err()
    .expect("a margin of 2 is refused")
    .to_string();
    assert!(err.contains("tie_margin"), "{err}");
}

#[test]
fn planted_near_ties_among_spread_codes_and_a_zero_input() {
    // Spread codes, and for each input three near copies of its own direction (1e-7 apart) at
    // ids far apart, so that they fall in different tiles and threads and the running best
    // rises past earlier candidates (the pruning); one input is zero (every code ties: id 0).
    let mut rng = StdRng::seed_from_u64(36);
    let (n, v, d) = (40, 3000, 64);
    let x = randn(&mut rng, &[n, d], 1.0);
    let mut xv: Vec<Vec<f32>> = x.to_vec2().unwrap();
    xv[5] = vec![0.0; d];
    let mut ev: Vec<Vec<f32>> = randn(&mut rng, &[v, d], 1.0).to_vec2().unwrap();
    let noise: Vec<Vec<f32>> = randn(&mut rng, &[3 * n, d], 1e-7).to_vec2().unwrap();
    for (i, xr) in xv.iter().enumerate().filter(|(i, _)| *i != 5) {
        for t in 0..3 {
            let id = (i * 70 + 5 + t * 1000) % v;
            ev[id] = xr
                .iter()
                .zip(&noise[3 * i + t])
                .map(|(a, z)| a * (1.0 + t as f32) + z)
                .collect();
        }
    }
    let x = Tensor::new(xv.clone(), &Device::Cpu).unwrap();
    let e = Tensor::new(ev, &Device::Cpu).unwrap();
    let q = Quantizer::new(&e, QuantizerConfig::default()).unwrap();
    let want = exact_argmax(&xv, &q.normed().to_vec2().unwrap());
    assert_eq!(want[5], 0, "a zero input ties everywhere: the lowest id");
    same_under_every_tiling(&e, &x, &want, &[64, 1000, 5000, 40 * 3000, 1 << 22]);
}
