//! The fused kernels against their primitive-op forms: values, gradients, bits.

use super::*;
use candle_core::{Device, Var};

mod feature_nets;

/// A tensor's values as their bits, for comparisons that must be exact.
fn bits(t: &Tensor) -> Vec<u32> {
    let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    v.iter().map(|x| x.to_bits()).collect()
}

fn rand(shape: &[usize], seed: u64) -> Var {
    Var::from_tensor(
        &crate::rng::uniform_tensor(shape, seed, &Device::Cpu)
            .unwrap()
            .affine(4.0, 0.3)
            .unwrap(),
    )
    .unwrap()
}

/// The AVX2 and AVX-512 copies of the element-wise loops give the same bits as the baseline
/// copies (a no-op comparison on a CPU without AVX2, said so; AVX-512 where the CPU has it).
#[test]
fn avx2_loops_match_the_baseline_bit_for_bit() {
    if !std::is_x86_feature_detected!("avx2") {
        eprintln!("no AVX2 on this CPU: only the baseline copies run here");
    }
    let x = rand(&[3, 5, 2 * 37], 11);
    let w = rand(&[37], 12);
    let b = rand(&[37], 13);
    let xs = rand(&[3, 5, 37], 14);
    let qkv = rand(&[2, 9, 3 * 4 * 5], 15);
    let img = rand(&[2, 9, 11], 16);
    let taps = rand(&[9, 11], 17);
    let pos = rand(&[5, 37], 21);
    let run = || {
        let outs = [
            gelu_erf(x.as_tensor()).unwrap(),
            gelu_tanh(x.as_tensor()).unwrap(),
            gated_gelu(x.as_tensor()).unwrap(),
            layer_norm(xs.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-5).unwrap(),
            layer_norm_plus(
                xs.as_tensor(),
                w.as_tensor(),
                b.as_tensor(),
                pos.as_tensor()
                    .broadcast_as((3, 5, 37))
                    .unwrap()
                    .contiguous()
                    .unwrap()
                    .as_ref(),
                1e-5,
            )
            .unwrap(),
            attention_qkv(qkv.as_tensor(), 4, None).unwrap(),
            depthwise3x3(img.as_tensor(), taps.as_tensor(), 3, || unreachable!()).unwrap(),
            add_items(xs.as_tensor(), pos.as_tensor()).unwrap(),
            cross_entropy(
                &xs.as_tensor().reshape((15, 37)).unwrap(),
                &Tensor::arange(0u32, 15, &Device::Cpu).unwrap(),
            )
            .unwrap(),
        ];
        let loss = outs
            .iter()
            .map(|o| o.sqr().unwrap().sum_all().unwrap())
            .reduce(|a, b| (a + b).unwrap())
            .unwrap();
        let grads = loss.backward().unwrap();
        let mut bits: Vec<u32> = Vec::new();
        let mut push = |t: &Tensor| {
            let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            bits.extend(v.iter().map(|v| v.to_bits()));
        };
        for t in outs.iter().chain(
            [&x, &w, &b, &xs, &qkv, &img, &taps, &pos]
                .iter()
                .map(|v| grads.get(v.as_tensor()).unwrap()),
        ) {
            push(t);
        }
        // The forward-only kernels of the feature networks: pooling, the convolution's
        // epilogue, and the Winograd transforms of every tile (3x3 and 5x5 stride-1 convolutions
        // over 8 channels).
        let planes = rand(&[2, 8, 13, 11], 18);
        let filt = rand(&[5, 8, 5, 5], 19);
        let bias = rand(&[5], 20);
        let pools = [
            Pool {
                kind: PoolKind::Max,
                k: 3,
                stride: 2,
                pad: 0,
            },
            Pool {
                kind: PoolKind::Avg,
                k: 3,
                stride: 1,
                pad: 1,
            },
        ];
        let mut fwd: Vec<Tensor> = pools
            .iter()
            .map(|&p| pool2d(planes.as_tensor(), p).unwrap())
            .collect();
        let same = ConvGeometry::same;
        // 13x11 maps (F(4x4, 3x3), F(4x4, 5x5)), a 3x3 map (F(3x3, 3x3)), a 2x2 one (F(2x2,
        // 5x5)).
        let p = planes.as_tensor();
        let small = p.narrow(2, 0, 6).unwrap().narrow(3, 0, 6).unwrap();
        let five = p.narrow(2, 0, 5).unwrap().narrow(3, 0, 5).unwrap();
        for (x, kh, g) in [
            (p, 3, same(1, 1)),
            (p, 3, same(2, 0)),
            (p, 5, same(1, 2)),
            (&five, 3, same(1, 0)),
            (&small, 5, same(1, 0)),
        ] {
            let w = filt.as_tensor().narrow(2, 0, kh).unwrap();
            let w = w.narrow(3, 0, kh).unwrap();
            let y = conv_with(x, &w, bias.as_tensor(), g, true, conv::WinoPath::Always);
            fwd.push(y.unwrap());
        }
        // The 1-D path: 1x7 and 7x1 (F(2, 7)), 1x3 and 3x1 (F(4, 3)).
        let filt7 = rand(&[5, 8, 7, 7], 22);
        for (kh, kw) in [(1, 7), (7, 1), (1, 3), (3, 1)] {
            let w = filt7.as_tensor().narrow(2, 0, kh).unwrap();
            let w = w.narrow(3, 0, kw).unwrap();
            let (ph, pw) = ((kh - 1) / 2, (kw - 1) / 2);
            let g = ConvGeometry {
                stride: 1,
                pad: [ph, ph, pw, pw],
            };
            let y = conv_with(p, &w, bias.as_tensor(), g, true, conv::WinoPath::Always);
            fwd.push(y.unwrap());
        }
        fwd.iter().for_each(&mut push);
        bits
    };
    use std::sync::atomic::Ordering::SeqCst;
    let fast = run();
    let mut copies = vec![(
        if super::simd::avx512_on() {
            "AVX-512"
        } else {
            "AVX2"
        },
        fast,
    )];
    if super::simd::avx512_on() {
        super::simd::AVX2_ONLY.store(true, SeqCst);
        copies.push(("AVX2", run()));
        super::simd::AVX2_ONLY.store(false, SeqCst);
    } else {
        println!("no AVX-512 on this CPU: its copies are not compared here");
    }
    BASELINE_ONLY.store(true, SeqCst);
    let base = run();
    BASELINE_ONLY.store(false, SeqCst);
    for (name, bits) in copies {
        assert_eq!(bits.len(), base.len());
        let differ = bits.iter().zip(&base).filter(|(a, b)| a != b).count();
        assert_eq!(
            differ,
            0,
            "{name}: {differ} of {} values differ",
            bits.len()
        );
    }
}

pub(crate) fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

/// Values of `f` and `g`, and their gradients with respect to every var through
/// `sum(out * r)` for a random `r`, agree within `tol`.
pub(crate) fn same(vars: &[&Tensor], f: impl Fn() -> Tensor, g: impl Fn() -> Tensor, tol: f32) {
    let (a, b) = (f(), g());
    assert_eq!(a.dims(), b.dims());
    assert!(
        max_diff(&a, &b) < tol,
        "values differ by {}",
        max_diff(&a, &b)
    );
    let r = rand(a.dims(), 99);
    let ga = (a * r.as_tensor())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let gb = (b * r.as_tensor())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for (i, v) in vars.iter().enumerate() {
        let (x, y) = (ga.get(v).expect("fused grad"), gb.get(v).expect("ops grad"));
        let scale = y
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .max(1.0);
        let d = max_diff(x, y);
        assert!(
            d < tol * scale,
            "gradient {i} differs by {d} (scale {scale})"
        );
    }
}

#[test]
fn add_items_matches_broadcast_add_with_gradients() {
    // Items of 3 x 1000 values: two column tasks in the backward sum, the second partial.
    for (x, p) in [
        (rand(&[4, 3, 1000], 31), rand(&[3, 1000], 32)),
        (rand(&[1, 7, 5], 33), rand(&[1, 7, 5], 34)),
        (rand(&[16, 64, 12], 35), rand(&[64, 12], 36)),
    ] {
        same(
            &[x.as_tensor(), p.as_tensor()],
            || add_items(x.as_tensor(), p.as_tensor()).unwrap(),
            || x.as_tensor().broadcast_add(p.as_tensor()).unwrap(),
            1e-5,
        );
    }
    // Not whole items: candle's op (and its error), not the kernel.
    let (x, p) = (rand(&[2, 6], 37), rand(&[4], 38));
    assert!(add_items(x.as_tensor(), p.as_tensor()).is_err());
}

#[test]
fn gelu_tanh_and_erf_match_candle_with_gradients() {
    let x = rand(&[7, 33], 1);
    same(
        &[x.as_tensor()],
        || gelu_tanh(x.as_tensor()).unwrap(),
        || x.as_tensor().gelu().unwrap(),
        1e-5,
    );
    same(
        &[x.as_tensor()],
        || gelu_erf(x.as_tensor()).unwrap(),
        || x.as_tensor().gelu_erf().unwrap(),
        1e-5,
    );
}

#[test]
fn softmax_matches_candle_with_gradients() {
    let x = rand(&[3, 5, 17], 2);
    same(
        &[x.as_tensor()],
        || softmax_last(x.as_tensor()).unwrap(),
        || candle_nn::ops::softmax(x.as_tensor(), candle_core::D::Minus1).unwrap(),
        1e-5,
    );
    // Large logits: no overflow.
    let big = (x.as_tensor() * 100.0).unwrap();
    let y = softmax_last(&big).unwrap();
    let sums: Vec<f32> = y.sum(2).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-5), "{sums:?}");
}

#[test]
fn frozen_matmul_t_matches_candle_and_gives_no_weight_gradient() {
    let x = rand(&[2, 5, 7], 50);
    let w = rand(&[9, 7], 51);
    same(
        &[x.as_tensor()],
        || frozen_matmul_t(x.as_tensor(), w.as_tensor()).unwrap(),
        || {
            x.as_tensor()
                .broadcast_matmul(&w.as_tensor().t().unwrap())
                .unwrap()
        },
        1e-5,
    );
    let g = frozen_matmul_t(x.as_tensor(), w.as_tensor())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(g.get(x.as_tensor()).is_some());
    assert!(
        g.get(w.as_tensor()).is_none(),
        "the frozen table gets no gradient"
    );
    let e = frozen_matmul_t(x.as_tensor(), &w.as_tensor().t().unwrap()).unwrap_err();
    assert!(
        e.to_string().contains("input width 7, weight (7, 9)"),
        "{e}"
    );
}

#[test]
fn cross_entropy_matches_candle_with_gradients() {
    let x = rand(&[6, 41], 7);
    let t = Tensor::new(&[0u32, 40, 3, 3, 17, 29], &Device::Cpu).unwrap();
    same(
        &[x.as_tensor()],
        || cross_entropy(x.as_tensor(), &t).unwrap(),
        || candle_nn::loss::cross_entropy(x.as_tensor(), &t).unwrap(),
        1e-5,
    );
    // Large logits stay finite and equal candle's.
    let big = (x.as_tensor() * 80.0).unwrap();
    let a = cross_entropy(&big, &t).unwrap().to_scalar::<f32>().unwrap();
    let b = candle_nn::loss::cross_entropy(&big, &t)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(
        a.is_finite() && (a - b).abs() <= 1e-5 * b.abs(),
        "{a} vs {b}"
    );
    // A target outside the classes is an error, not a wrong loss.
    let bad = Tensor::new(&[0u32, 41, 3, 3, 17, 29], &Device::Cpu).unwrap();
    let e = cross_entropy(x.as_tensor(), &bad).unwrap_err().to_string();
    assert!(e.contains("target class 41"), "{e}");
}

#[test]
fn layer_norm_matches_primitive_ops_with_gradients() {
    let x = rand(&[4, 9, 24], 3);
    let w = rand(&[24], 4);
    let b = rand(&[24], 5);
    same(
        &[x.as_tensor(), w.as_tensor(), b.as_tensor()],
        || layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-5).unwrap(),
        || layer_norm_ops(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-5).unwrap(),
        2e-5,
    );
    // Many rows: the per-task partial sums of dw and db add up across tasks.
    let x = rand(&[300, 130], 6);
    let w = rand(&[130], 7);
    let b = rand(&[130], 8);
    same(
        &[x.as_tensor(), w.as_tensor(), b.as_tensor()],
        || layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-12).unwrap(),
        || layer_norm_ops(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-12).unwrap(),
        1e-4,
    );
}

#[test]
fn fast_exp_and_erf_are_accurate() {
    let mut worst = (0f32, 0f32);
    for i in 0..20001 {
        let x = -80.0 + 160.0 * i as f32 / 20000.0;
        let want = (x as f64).exp();
        let rel = ((fast_exp(x) as f64 - want) / want).abs() as f32;
        worst.0 = worst.0.max(rel);
        let y = -5.0 + 10.0 * i as f32 / 20000.0;
        let e = (fast_erf(y) as f64 - candle_core::cpu::erf::erf_f64(y as f64)).abs() as f32;
        worst.1 = worst.1.max(e);
    }
    assert!(worst.0 < 5e-7, "exp relative error {}", worst.0);
    assert!(worst.1 < 6e-7, "erf absolute error {}", worst.1); // 1.5e-7 + f32 rounding
    assert_eq!(fast_exp(-1e30), fast_exp(-87.0));
    assert!(fast_exp(1e30).is_finite());
}

#[test]
fn frozen_linear_matches_candle_and_gives_no_weight_gradient() {
    let x = rand(&[2, 5, 7], 10);
    let w = rand(&[3, 7], 11);
    let b = rand(&[3], 12);
    same(
        &[x.as_tensor()],
        || frozen_linear(x.as_tensor(), w.as_tensor(), b.as_tensor()).unwrap(),
        || {
            x.as_tensor()
                .broadcast_matmul(&w.as_tensor().t().unwrap())
                .unwrap()
                .broadcast_add(b.as_tensor())
                .unwrap()
        },
        1e-5,
    );
    let g = frozen_linear(x.as_tensor(), w.as_tensor(), b.as_tensor())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(g.get(w.as_tensor()).is_none() && g.get(b.as_tensor()).is_none());
}

/// The residual added by the product's tasks gives the bits of the product then candle's
/// addition: output and both gradients, with and without the packed weight, at MiniLM's
/// output-layer shape (16 x 64 tokens, 1536 -> 384); a residual of another shape is an
/// error that says so.
#[test]
fn frozen_linear_plus_gives_the_sums_of_the_product_then_the_addition() {
    let (inp, out) = (1536, 384);
    let w = rand(&[out, inp], 1).as_tensor().detach();
    let b = rand(&[out], 2).as_tensor().detach();
    let x = rand(&[16, 64, inp], 3);
    let r = rand(&[16, 64, out], 4);
    let run = |y: Tensor| {
        let g = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        [
            bits(&y),
            bits(g.get(x.as_tensor()).unwrap()),
            bits(g.get(r.as_tensor()).unwrap()),
        ]
    };
    let (xt, rt) = (x.as_tensor(), r.as_tensor());
    let want = run((frozen_linear(xt, &w, &b).unwrap() + rt).unwrap());
    let packs = std::sync::Arc::new(FrozenPacks::default());
    for p in [None, Some(&packs)] {
        let got = run(frozen_linear_plus(xt, &w, &b, rt, p).unwrap());
        for (what, (a, g)) in ["output", "x gradient", "residual gradient"]
            .iter()
            .zip(want.iter().zip(&got))
        {
            assert!(a == g, "the {what} differs (packs: {})", p.is_some());
        }
    }
    // Where the BLAS in use packs (oneMKL), the second pass took the packed path.
    assert!(
        !blas::packs() || packs.made() == (true, true),
        "the packed forms were not made: {packs:?}"
    );
    let short = r.as_tensor().narrow(1, 0, 32).unwrap();
    let Err(e) = frozen_linear_plus(xt, &w, &b, &short, None) else {
        panic!("a residual of the wrong shape was taken");
    };
    let e = e.to_string();
    assert!(e.contains("residual"), "{e}");
}

/// The transposed-weight form gives `frozen_linear`'s bits, forward and backward, at BERT's
/// shapes (the gemm crate's depth blocks start at 512: 1536 is split, 384 is not) and at odd
/// ones, and no weight gradient.
#[test]
fn frozen_linear_t_gives_frozen_linears_bits() {
    if let Some(b) = crate::kernels::blas::active() {
        eprintln!(
            "{} is loaded: frozen_linear_t takes frozen_linear's own path, so only the shape \
             check below is exercised",
            b.name
        );
    }
    for (i, (rows, inp, out)) in [(700, 384, 1536), (700, 1536, 384), (9, 7, 3), (33, 520, 24)]
        .into_iter()
        .enumerate()
    {
        // BERT's shapes take the transposed path (else this would compare frozen_linear with
        // itself), the tiny one does not.
        if i < 2 {
            assert!(super::frozen::same_sums_either_way(rows, inp, out));
        } else if i == 2 {
            assert!(!super::frozen::same_sums_either_way(rows, inp, out));
        }
        let seed = 60 + 3 * i as u64;
        let x = rand(&[rows, inp], seed);
        let w = rand(&[out, inp], seed + 1);
        let b = rand(&[out], seed + 2);
        let wt = w.as_tensor().t().unwrap().contiguous().unwrap().detach();
        let run = |transposed: bool| {
            let y = if transposed {
                frozen_linear_t(x.as_tensor(), w.as_tensor(), &wt, b.as_tensor())
            } else {
                frozen_linear(x.as_tensor(), w.as_tensor(), b.as_tensor())
            }
            .unwrap();
            // A gradient that is not all ones, so that dx's sums are exercised.
            let g = (&y * &y).unwrap().sum_all().unwrap().backward().unwrap();
            assert!(g.get(w.as_tensor()).is_none() && g.get(b.as_tensor()).is_none());
            assert!(g.get(&wt).is_none());
            (bits(&y), bits(g.get(x.as_tensor()).unwrap()))
        };
        let (want, got) = (run(false), run(true));
        assert!(want.0 == got.0, "{rows} x {inp} -> {out}: outputs differ");
        assert!(
            want.1 == got.1,
            "{rows} x {inp} -> {out}: input gradients differ"
        );
    }
    // A transposed weight of the wrong shape is an error naming both.
    let (x, w, b) = (rand(&[2, 7], 1), rand(&[3, 7], 2), rand(&[3], 3));
    let e = frozen_linear_t(x.as_tensor(), w.as_tensor(), w.as_tensor(), b.as_tensor())
        .unwrap_err()
        .to_string();
    assert!(e.contains("transposed weight (3, 7)"), "{e}");
}

/// The attention's backward pass gives the same bits with the forward pass's probabilities
/// kept (the first backward pass over a graph takes them) and recomputed (a second backward
/// pass over the same graph finds none), at the ViT's size (64 tokens, 6 heads of 32: the
/// small products' kernel) and at odd ones.
#[test]
fn attention_backward_is_the_same_with_kept_or_recomputed_probabilities() {
    for (b, s, heads, dh) in [(2, 64, 6, 32), (3, 9, 2, 5)] {
        let qkv = rand(&[b, s, 3 * heads * dh], 40 + s as u64);
        let y = attention_qkv(qkv.as_tensor(), heads, None).unwrap();
        let loss = (&y * &y).unwrap().sum_all().unwrap();
        let taken = || super::attention::KEPT_TAKEN.with(|n| n.get());
        let before = taken();
        let kept = bits(loss.backward().unwrap().get(qkv.as_tensor()).unwrap());
        assert_eq!(
            taken(),
            before + 1,
            "the first backward pass takes the probabilities"
        );
        let recomputed = bits(loss.backward().unwrap().get(qkv.as_tensor()).unwrap());
        assert_eq!(taken(), before + 1, "the second finds none");
        assert!(
            kept == recomputed,
            "{b} x {s} x {heads} heads of {dh}: gradients differ"
        );
        // The output is the untracked forward pass's too.
        let plain = attention_qkv(&qkv.as_tensor().detach(), heads, None).unwrap();
        assert!(bits(&plain) == bits(&y));
    }
}

/// LayerNorm's backward pass gives the same bits with the forward pass's row statistics kept
/// (the first backward pass over a graph takes them) and recomputed (a second one finds none),
/// at the ViT's widths and at an odd one (a tail after the eight-lane chunks), over more rows
/// than one task takes.
#[test]
fn layer_norm_backward_is_the_same_with_kept_or_recomputed_statistics() {
    for (rows, d) in [(1024, 192), (300, 384), (97, 37)] {
        let x = rand(&[rows, d], 50 + d as u64);
        let (w, b) = (rand(&[d], 51), rand(&[d], 52));
        let y = layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-5).unwrap();
        let loss = (&y * &y).unwrap().sum_all().unwrap();
        let taken = || super::layer_norm::STATS_TAKEN.with(|n| n.get());
        let before = taken();
        let g1 = loss.backward().unwrap();
        assert_eq!(
            taken(),
            before + 1,
            "the first backward pass takes the statistics"
        );
        let g2 = loss.backward().unwrap();
        assert_eq!(taken(), before + 1, "the second finds none");
        for (v, what) in [(&x, "input"), (&w, "weight"), (&b, "bias")] {
            let (a, c) = (
                g1.get(v.as_tensor()).unwrap(),
                g2.get(v.as_tensor()).unwrap(),
            );
            assert!(
                bits(a) == bits(c),
                "{rows} x {d}: the {what}'s gradients differ"
            );
        }
    }
}

#[test]
fn fused_attention_matches_split_heads_with_gradients() {
    for (b, s, heads, dh) in [(2, 5, 3, 4), (3, 16, 2, 8)] {
        let qkv = rand(&[b, s, 3 * heads * dh], 20 + s as u64);
        same(
            &[qkv.as_tensor()],
            || attention_qkv(qkv.as_tensor(), heads, None).unwrap(),
            || {
                // The unfused path: heads split, primitive softmax.
                let d = heads * dh;
                let t = qkv.as_tensor();
                let split = |i: usize| {
                    t.narrow(2, i * d, d)
                        .unwrap()
                        .reshape((b, s, heads, dh))
                        .unwrap()
                        .transpose(1, 2)
                        .unwrap()
                        .contiguous()
                        .unwrap()
                };
                let (q, k, v) = (split(0), split(1), split(2));
                let sc = (q.matmul(&k.t().unwrap()).unwrap() / (dh as f64).sqrt()).unwrap();
                candle_nn::ops::softmax(&sc, candle_core::D::Minus1)
                    .unwrap()
                    .matmul(&v)
                    .unwrap()
                    .transpose(1, 2)
                    .unwrap()
                    .reshape((b, s, d))
                    .unwrap()
            },
            1e-5,
        );
    }
}

/// `dense` and both its gradients against candle's matmul; with 40 output columns the weight
/// gradient is split across two threads (32 + 8 columns).
#[test]
fn dense_matches_candle_matmul_with_gradients() {
    // The last: fewer rows than threads, and columns that split unevenly in 16s.
    for (i, &(b, s, inp, out)) in [(3, 7, 6, 5), (2, 9, 6, 40), (1, 1, 3, 17)]
        .iter()
        .enumerate()
    {
        let x = rand(&[b, s, inp], 30 + 2 * i as u64);
        let w = rand(&[inp, out], 31 + 2 * i as u64);
        same(
            &[x.as_tensor(), w.as_tensor()],
            || dense(x.as_tensor(), w.as_tensor()).unwrap(),
            || x.as_tensor().broadcast_matmul(w.as_tensor()).unwrap(),
            1e-5,
        );
    }
}

/// `dense_plus` and `layer_norm_plus` give the bits of the product or LayerNorm followed by
/// candle's addition of the residual: the output, and the gradients of every input (the
/// residual's is the output's), over enough rows for several tasks (LayerNorm: 682 rows of 24).
#[test]
fn residual_fusions_give_the_bits_of_the_separate_addition() {
    let check = |vars: &[&Tensor], fused: &dyn Fn() -> Tensor, ops: &dyn Fn() -> Tensor| {
        let (a, b) = (fused(), ops());
        assert_eq!(a.dims(), b.dims());
        assert_eq!(bits(&a), bits(&b), "values");
        let r = rand(a.dims(), 98);
        let grads = |t: Tensor| {
            (t * r.as_tensor())
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap()
        };
        let (ga, gb) = (grads(a), grads(b));
        for (i, v) in vars.iter().enumerate() {
            let (x, y) = (ga.get(v).expect("fused grad"), gb.get(v).expect("ops grad"));
            assert_eq!(bits(x), bits(y), "gradient {i}");
        }
    };
    for &(rows, inp, out) in &[(1500, 24, 40), (5, 7, 3)] {
        let x = rand(&[rows, inp], 60);
        let w = rand(&[inp, out], 61);
        let res = rand(&[rows, out], 62);
        let (x, w, res) = (x.as_tensor(), w.as_tensor(), res.as_tensor());
        check(&[x, w, res], &|| dense_plus(x, w, res).unwrap(), &|| {
            (res + dense(x, w).unwrap()).unwrap()
        });
        let (wn, bn) = (rand(&[inp], 63), rand(&[inp], 64));
        let (wn, bn) = (wn.as_tensor(), bn.as_tensor());
        let res = rand(&[rows, inp], 65);
        let res = res.as_tensor();
        check(
            &[x, wn, bn, res],
            &|| layer_norm_plus(x, wn, bn, res, 1e-5).unwrap(),
            &|| (res + layer_norm(x, wn, bn, 1e-5).unwrap()).unwrap(),
        );
    }
    let (x, w) = (rand(&[4, 6], 66), rand(&[6, 5], 67));
    let e = dense_plus(x.as_tensor(), w.as_tensor(), &rand(&[4, 6], 68))
        .unwrap_err()
        .to_string();
    assert!(e.contains("residual"), "{e}");
    let (x, w, b) = (rand(&[4, 6], 69), rand(&[6], 70), rand(&[5], 71));
    let e = layer_norm_plus(
        x.as_tensor(),
        w.as_tensor(),
        b.as_tensor(),
        x.as_tensor(),
        1e-5,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("bias [5]"), "{e}");
}

#[test]
fn gated_gelu_matches_gelu_times_gate_with_gradients() {
    let x = rand(&[3, 4, 10], 40);
    same(
        &[x.as_tensor()],
        || gated_gelu(x.as_tensor()).unwrap(),
        || {
            let t = x.as_tensor();
            (t.narrow(2, 0, 5).unwrap().gelu().unwrap() * t.narrow(2, 5, 5).unwrap()).unwrap()
        },
        1e-5,
    );
}

#[test]
fn non_contiguous_inputs_are_accepted() {
    let x = rand(&[6, 8], 9);
    let t = x.as_tensor().t().unwrap();
    let a = softmax_last(&t).unwrap();
    let b = candle_nn::ops::softmax(&t.contiguous().unwrap(), candle_core::D::Minus1).unwrap();
    assert!(max_diff(&a, &b) < 1e-6);
}

/// The weight gradients of the backward passes that write `[dx | weight gradients]` into one
/// buffer hold storage of their own size: a gradient that is a view of that buffer (or a copy
/// of all of it) keeps an activation-sized block alive for as long as the gradient is kept.
#[test]
fn weight_gradients_own_just_their_elements() {
    let x = rand(&[4, 9, 24], 80);
    let w = rand(&[24, 30], 81);
    let scale = rand(&[30], 82);
    let bias = rand(&[30], 83);
    let taps = rand(&[9, 30], 84);
    let h = dense(x.as_tensor(), w.as_tensor()).unwrap();
    let h = layer_norm(&h, scale.as_tensor(), bias.as_tensor(), 1e-5).unwrap();
    let h = depthwise3x3(&h, taps.as_tensor(), 3, || unreachable!()).unwrap();
    let grads = h.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    for (name, v) in [
        ("dense w", &w),
        ("LN scale", &scale),
        ("LN bias", &bias),
        ("taps", &taps),
    ] {
        let g = grads.get(v.as_tensor()).unwrap();
        let (s, _) = g.storage_and_layout();
        let held = match &*s {
            candle_core::Storage::Cpu(c) => c.as_slice::<f32>().unwrap().len(),
            _ => unreachable!("CPU tensors"),
        };
        assert_eq!(
            held,
            g.elem_count(),
            "{name}'s gradient holds {held} floats for its {}",
            g.elem_count()
        );
    }
}
