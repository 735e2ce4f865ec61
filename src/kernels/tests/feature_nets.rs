//! The feature networks' convolutions (im2col and Winograd), pooling and LPIPS's distance
//! against candle's forms and the direct sums.

use super::*;

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

/// The convolution on the BLAS path against candle's (pad, `conv2d`, bias, ReLU) for every
/// geometry the feature networks use: 1x1 read in place, 3x3 same and strided, asymmetric
/// 1x7 / 7x1 padding, AlexNet's 11x11 stride 4, several im2col tiles per image; small outputs
/// grouped across images in one group, in several groups across threads with a smaller last
/// group (13 images of 10x11: 11 + 2), large outputs image by image across threads (3 images of
/// 33x34); with and without the ReLU.
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
