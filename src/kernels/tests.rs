//! The fused kernels against their primitive-op forms: values, gradients, bits.

use super::*;
use candle_core::{Device, Var};

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
    let bits = |t: &Tensor| -> Vec<u32> {
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        v.iter().map(|x| x.to_bits()).collect()
    };
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
    let bits = |t: &Tensor| -> Vec<u32> {
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        v.iter().map(|x| x.to_bits()).collect()
    };
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
    let bits = |t: &Tensor| -> Vec<u32> {
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        v.iter().map(|x| x.to_bits()).collect()
    };
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

/// The convolution on the BLAS path against candle's (pad, `conv2d`, bias, ReLU) for every
/// geometry the feature networks use: 1x1 read in place, 3x3 same and strided, asymmetric
/// 1x7 / 7x1 padding, AlexNet's 11x11 stride 4, several im2col tiles per image; small outputs
/// grouped across images in one group, in several groups across threads with a smaller last
/// group (13 images of 10x11: 11 + 2), large outputs image by image across threads (3 images of
/// 33x34); with and without the ReLU.
/// A convolution's input `(n, c, h, w)`, weights `(co, c, kh, kw)` and bias, drawn from the
/// streams `seed`, `seed + 100`, `seed + 200`.
fn conv_inputs(x: [usize; 4], w: [usize; 4], seed: u64) -> (Tensor, Tensor, Tensor) {
    let draw = |shape: &[usize], s: u64, mul: f64, add: f64| {
        rand(shape, s).as_tensor().affine(mul, add).unwrap()
    };
    (
        draw(&x, seed, 1.0, -2.3),
        draw(&w, seed + 100, 0.1, -0.2),
        draw(&[w[0]], seed + 200, 1.0, -2.0),
    )
}

/// A stack of convolutions (Inception's block heads) gives its parts' outputs one after
/// another, the ReLU only on the parts that have it, on the kernel's path and the candle form;
/// parts that cannot be stacked are errors.
#[test]
fn stacked_convolutions_give_their_parts() {
    // Two images: a product per image; eight: 3x3 images grouped into one product per thread,
    // 1x1 ones (read in place, never grouped) a product per image on the threads.
    for (n, k, g, seed) in [
        (2, 1, ConvGeometry::same(1, 0), 700),
        (2, 3, ConvGeometry::same(1, 1), 710),
        (8, 1, ConvGeometry::same(1, 0), 720),
        (8, 3, ConvGeometry::same(1, 1), 730),
    ] {
        // Biases lowered so that both parts have negative sums (the draws' sums are positive).
        let (x, w1, b1) = conv_inputs([n, 64, 12, 10], [72, 64, k, k], seed);
        let (_, w2, b2) = conv_inputs([n, 64, 12, 10], [40, 64, k, k], seed + 1);
        let shift = if k == 1 { -14.0 } else { -120.0 };
        let (b1, b2) = ((b1 + shift).unwrap(), (b2 + shift).unwrap());
        let (c1, c2) = (
            Conv2d::new(w1.clone(), b1.clone(), g, true),
            Conv2d::new(w2.clone(), b2.clone(), g, false),
        );
        let stack = Conv2d::stack(&[(&c1, true), (&c2, false)]).unwrap();
        assert_eq!(stack.relu, 72);
        let want = Tensor::cat(
            &[
                conv2d_bias_relu_ops(&x, &w1, &b1, g, true).unwrap(),
                conv2d_bias_relu_ops(&x, &w2, &b2, g, false).unwrap(),
            ],
            1,
        )
        .unwrap();
        let scale = max_diff(&want, &want.zeros_like().unwrap());
        let got = stack.forward(&x).unwrap();
        assert_eq!(got.dims(), want.dims());
        assert!(max_diff(&got, &want) <= 1e-5 * scale, "{k}x{k}");
        let ops = conv::ops_relu_below(&x, &stack.weight, &stack.bias, g, stack.relu).unwrap();
        assert!(max_diff(&ops, &want) <= 1e-5 * scale, "{k}x{k}");
        // The second part has negative outputs (no ReLU), the first none.
        let min = |t: &Tensor| {
            t.flatten_all()
                .unwrap()
                .min(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        assert!(min(&got.narrow(1, 0, 72).unwrap()) >= 0.0);
        assert!(min(&got.narrow(1, 72, 40).unwrap()) < 0.0);
        let before = conv2d_bias_relu_ops(&x, &w1, &b1, g, false).unwrap();
        assert!(min(&before) < 0.0, "the ReLU is not exercised");
        assert!(Conv2d::stack(&[(&c2, false), (&c1, true)]).is_err());
    }
    let (_, w3, b3) = conv_inputs([1, 64, 4, 4], [8, 64, 3, 3], 750);
    let (_, w1, b1) = conv_inputs([1, 64, 4, 4], [8, 64, 1, 1], 751);
    let g = ConvGeometry::same(1, 0);
    let (a, b) = (Conv2d::new(w1, b1, g, true), Conv2d::new(w3, b3, g, true));
    assert!(Conv2d::stack(&[(&a, true), (&b, true)]).is_err());
}

#[test]
fn conv2d_matches_candle_for_every_geometry() {
    let vertical = ConvGeometry {
        stride: 1,
        pad: [3, 3, 0, 0],
    };
    let horizontal = ConvGeometry {
        stride: 1,
        pad: [0, 0, 3, 3],
    };
    let cases: [(usize, usize, usize, usize, usize, usize, ConvGeometry); 14] = [
        // 7x1 and 1x7 with two im2col tiles per image (420 pixels, 256 per tile: the cut is
        // inside a row), and 7x1 on small maps grouped across images.
        (1, 160, 20, 4, 7, 1, vertical),
        (1, 160, 20, 4, 1, 7, horizontal),
        (5, 3, 6, 4, 7, 1, vertical),
        (13, 4, 10, 6, 3, 3, ConvGeometry::same(1, 1)),
        (3, 2, 33, 5, 3, 3, ConvGeometry::same(1, 1)),
        (3, 8, 9, 7, 1, 1, ConvGeometry::same(1, 0)),
        (1, 5, 11, 10, 3, 3, ConvGeometry::same(1, 1)),
        (2, 4, 13, 6, 3, 3, ConvGeometry::same(2, 0)),
        (
            2,
            6,
            9,
            5,
            1,
            7,
            ConvGeometry {
                stride: 1,
                pad: [0, 0, 3, 3],
            },
        ),
        (
            1,
            6,
            9,
            5,
            7,
            1,
            ConvGeometry {
                stride: 1,
                pad: [3, 3, 0, 0],
            },
        ),
        (2, 3, 35, 8, 11, 11, ConvGeometry::same(4, 2)),
        (1, 64, 30, 16, 3, 3, ConvGeometry::same(1, 1)),
        (3, 7, 8, 5, 5, 5, ConvGeometry::same(1, 2)),
        (
            1,
            3,
            10,
            4,
            3,
            2,
            ConvGeometry {
                stride: 2,
                pad: [1, 0, 0, 1],
            },
        ),
    ];
    for (i, &(n, c, side, co, kh, kw, g)) in cases.iter().enumerate() {
        let (x, w, b) = conv_inputs([n, c, side, side + 1], [co, c, kh, kw], 100 + i as u64);
        for (relu, winograd) in [(false, true), (true, true), (false, false), (true, false)] {
            let want = conv2d_bias_relu_ops(&x, &w, &b, g, relu).unwrap();
            // The Winograd paths (2-D, and 1-D for the 1x7 / 7x1 cases) and im2col.
            let path = if winograd {
                conv::WinoPath::Always
            } else {
                conv::WinoPath::Off
            };
            let got = conv_with(&x, &w, &b, g, relu, path).unwrap();
            assert_eq!(got.dims(), want.dims(), "case {i}");
            let err = max_diff(&got, &want);
            let scale = max_diff(&want, &want.zeros_like().unwrap());
            assert!(
                err <= 1e-5 * scale.max(1.0),
                "case {i} relu {relu} winograd {winograd}: max error {err} of {scale}"
            );
        }
    }
    // A kernel larger than the padded input is a named error.
    let x = rand(&[1, 2, 3, 3], 1).as_tensor().clone();
    let w = rand(&[1, 2, 5, 5], 2).as_tensor().clone();
    let b = rand(&[1], 3).as_tensor().clone();
    let e = conv2d_bias_relu(&x, &w, &b, ConvGeometry::same(1, 0), true).unwrap_err();
    assert!(e.to_string().contains("does not fit"), "{e}");
}

/// The Winograd path (3x3 and 5x5 at stride 1; at a larger stride, a kernel whose
/// space-to-depth form is 3x3 or 5x5, as AlexNet's 11x11/4 stem) against the candle form and
/// against the im2col path, in each of its modes: whole tiles and cut ones, no padding, same
/// padding and uneven padding, one block whose `n^2` products go to the threads, blocks per
/// thread, several images per block; and a layer's cached transform gives the same bits as the
/// transform computed for one call.
#[test]
fn winograd_matches_the_direct_convolution() {
    // (images, channels, height, out channels, width, padding, kernel side, stride)
    type Case = (usize, usize, usize, usize, usize, [usize; 4], usize, usize);
    let cases: [Case; 17] = [
        (2, 8, 13, 5, 7, [0; 4], 3, 1),
        (1, 16, 9, 12, 9, [1; 4], 3, 1),
        (3, 64, 40, 64, 16, [1; 4], 3, 1),
        (16, 32, 4, 40, 4, [1; 4], 3, 1),
        (2, 12, 7, 3, 10, [1, 0, 0, 1], 3, 1),
        (4, 96, 17, 20, 32, [2, 0, 1, 1], 3, 1),
        (2, 8, 9, 6, 11, [0; 4], 5, 1),
        (4, 64, 7, 64, 7, [2; 4], 5, 1),
        (2, 48, 35, 16, 35, [2; 4], 5, 1),
        (1, 10, 6, 5, 9, [2, 1, 0, 3], 5, 1),
        (2, 3, 35, 16, 37, [2; 4], 11, 4),
        (3, 3, 64, 64, 64, [2; 4], 11, 4),
        (2, 5, 17, 8, 19, [1, 0, 2, 1], 5, 2),
        (1, 4, 20, 6, 23, [0; 4], 7, 3),
        // 3x3 maps (F(3x3, 3x3)), AlexNet's third layer at 64 px; 2x2 and 1x2 maps of a 5x5
        // kernel (F(2x2, 5x5)); the other 5x5 cases take F(4x4, 5x5).
        (5, 96, 3, 72, 3, [1; 4], 3, 1),
        (3, 24, 6, 16, 6, [0; 4], 5, 1),
        (2, 16, 5, 8, 6, [0; 4], 5, 1),
    ];
    // Which tile each case takes (every tile is checked).
    let tiles: Vec<_> = cases
        .iter()
        .map(|&(_, _, side, _, wide, pad, k, stride)| {
            let ho = (side + pad[0] + pad[1] - k) / stride + 1;
            let wo = (wide + pad[2] + pad[3] - k) / stride + 1;
            winograd::tile_for(winograd::s2d_kernel(k, stride), ho, wo)
        })
        .collect();
    for t in [
        winograd::Tile::F4x3,
        winograd::Tile::F3x3,
        winograd::Tile::F4x5,
        winograd::Tile::F2x5,
    ] {
        assert!(tiles.contains(&Some(t)), "no case takes {t:?}");
    }
    for (i, &(n, c, side, co, wide, pad, k, stride)) in cases.iter().enumerate() {
        let (x, w, b) = conv_inputs([n, c, side, wide], [co, c, k, k], 400 + i as u64);
        let g = ConvGeometry { stride, pad };
        for relu in [false, true] {
            let want = conv2d_bias_relu_ops(&x, &w, &b, g, relu).unwrap();
            let scale = max_diff(&want, &want.zeros_like().unwrap());
            let got = conv_with(&x, &w, &b, g, relu, conv::WinoPath::Always).unwrap();
            assert_eq!(got.dims(), want.dims(), "case {i}");
            let err = max_diff(&got, &want);
            // F(4x4, 3x3) in f32: a few 1e-6 of the output's scale (the direct form's error
            // is a tenth of that), F(4x4, 5x5) about twice that; 3e-5 leaves room and still
            // catches a wrong transform.
            assert!(
                err <= 3e-5 * scale.max(1.0),
                "case {i} relu {relu}: max error {err} of {scale}"
            );
            // The layer's path (Winograd from `min_channels` each side and 16 tiles) and its
            // cached transform give the bits of the one-call form.
            let layer = Conv2d::new(w.clone(), b.clone(), g, relu);
            let once = conv2d_bias_relu(&x, &w, &b, g, relu).unwrap();
            let out = [n, want.dim(2).unwrap(), want.dim(3).unwrap()];
            if winograd::eligible(c, co, k, k, stride, out) {
                assert_eq!(max_diff(&once, &got), 0.0, "case {i}");
            }
            for _ in 0..2 {
                assert_eq!(
                    max_diff(&layer.forward(&x).unwrap(), &once),
                    0.0,
                    "case {i}"
                );
            }
            let direct = conv_with(&x, &w, &b, g, relu, conv::WinoPath::Off).unwrap();
            assert!(
                max_diff(&direct, &want) <= 1e-5 * scale.max(1.0),
                "case {i}"
            );
            assert!(
                max_diff(&direct, &got) > 0.0,
                "case {i}: the same path twice?"
            );
        }
    }
    // AlexNet's stem on three 64 px images (case 11) is a layer that takes the path.
    assert!(winograd::eligible(3, 64, 11, 11, 4, [3, 15, 15]));
}

/// The pooling kernel against candle's pooling for the windows the networks use (3x3 same and
/// stride 2, AlexNet's 3x3/2, VGG's 2x2/2, the 8x8 global average) on non-negative inputs,
/// and, with negative inputs, against a direct computation that leaves the padding out.
#[test]
fn pool2d_matches_candle_and_leaves_padding_out() {
    let pools = [
        (PoolKind::Avg, 3, 1, 1),
        (PoolKind::Max, 3, 1, 1),
        (PoolKind::Max, 3, 2, 0),
        (PoolKind::Max, 2, 2, 0),
        (PoolKind::Avg, 8, 8, 0),
        (PoolKind::Avg, 3, 2, 1),
        (PoolKind::Max, 3, 2, 1),
    ];
    // Small planes (a strided max pools them window by window) and wide ones (by row passes).
    for (i, &((kind, k, stride, pad), (h, w))) in pools
        .iter()
        .flat_map(|p| [(*p, (9usize, 8usize)), (*p, (13, 21))])
        .collect::<Vec<_>>()
        .iter()
        .enumerate()
    {
        let p = Pool {
            kind,
            k,
            stride,
            pad,
        };
        let x = rand(&[2, 3, h, w], 400 + i as u64)
            .as_tensor()
            .abs()
            .unwrap();
        let want = pool2d_ops(&x, p).unwrap();
        let got = pool2d(&x, p).unwrap();
        assert_eq!(got.dims(), want.dims(), "pool {i}");
        let err = max_diff(&got, &want);
        assert!(err <= 1e-5, "pool {i}: max error {err}");
        // Negative values: the padding is never a candidate or a count.
        let xn = x.affine(-1.0, 0.0).unwrap();
        let got: Vec<f32> = pool2d(&xn, p)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let xs: Vec<f32> = xn.flatten_all().unwrap().to_vec1().unwrap();
        let (ho, wo) = (
            (h + 2 * pad - k) / stride + 1,
            (w + 2 * pad - k) / stride + 1,
        );
        for plane in 0..6 {
            for oh in 0..ho {
                for ow in 0..wo {
                    let mut vals = Vec::new();
                    for r in 0..k {
                        for c in 0..k {
                            let (ih, iw) = (
                                (oh * stride + r) as isize - pad as isize,
                                (ow * stride + c) as isize - pad as isize,
                            );
                            if ih >= 0 && iw >= 0 && (ih as usize) < h && (iw as usize) < w {
                                vals.push(xs[plane * h * w + ih as usize * w + iw as usize]);
                            }
                        }
                    }
                    let want = match kind {
                        PoolKind::Max => vals.iter().copied().fold(f32::NEG_INFINITY, f32::max),
                        PoolKind::Avg => vals.iter().sum::<f32>() / vals.len() as f32,
                    };
                    let g = got[(plane * ho + oh) * wo + ow];
                    assert!(
                        (g - want).abs() <= 1e-5,
                        "pool {i} plane {plane} ({oh}, {ow}): {g} vs {want}"
                    );
                }
            }
        }
    }
}

/// LPIPS's tap distance in blocks of pixels gives the bits of the direct two-pass form (norms
/// of all pixels, then the weighted squared differences), on and off the AVX2 path, across
/// whole blocks and a cut last one (16 channels: blocks of 4,096 pixels; 5,000 pixels), and on
/// one block (384 channels, 225 pixels).
#[test]
fn lpips_tap_distance_matches_the_direct_form() {
    let direct = |a: &[f32], b: &[f32], lin: &[f32], pixels: usize| -> f32 {
        let (mut na, mut nb) = (vec![0f32; pixels], vec![0f32; pixels]);
        for (ar, br) in a.chunks(pixels).zip(b.chunks(pixels)) {
            for p in 0..pixels {
                na[p] += ar[p] * ar[p];
                nb[p] += br[p] * br[p];
            }
        }
        for v in na.iter_mut().chain(nb.iter_mut()) {
            *v = 1.0 / (v.sqrt() + 1e-10);
        }
        let mut acc = vec![0f32; pixels];
        for ((ar, br), &l) in a.chunks(pixels).zip(b.chunks(pixels)).zip(lin) {
            for p in 0..pixels {
                let d = ar[p] * na[p] - br[p] * nb[p];
                acc[p] += l * d * d;
            }
        }
        acc.iter().sum::<f32>() / pixels as f32
    };
    let draw =
        |n: usize, seed: u64| -> Vec<f32> { rand(&[n], seed).as_tensor().to_vec1().unwrap() };
    for (i, &(c, pixels)) in [(16usize, 5000usize), (384, 225)].iter().enumerate() {
        let s = 700 + 3 * i as u64;
        let (a, b, lin) = (draw(c * pixels, s), draw(c * pixels, s + 1), draw(c, s + 2));
        let want = direct(&a, &b, &lin, pixels);
        assert!(want > 0.0, "case {i}");
        for baseline in [false, true] {
            BASELINE_ONLY.store(baseline, std::sync::atomic::Ordering::SeqCst);
            let got = lpips_tap_distance(&a, &b, &lin, pixels);
            BASELINE_ONLY.store(false, std::sync::atomic::Ordering::SeqCst);
            assert_eq!(
                got.to_bits(),
                want.to_bits(),
                "case {i} baseline {baseline}"
            );
        }
    }
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
