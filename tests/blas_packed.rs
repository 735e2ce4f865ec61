//! oneMKL's packed products (`lqae::kernels::blas::{pack, sgemm_packed}`) give `cblas_sgemm`'s
//! bits at the sizes the kernels take them for: the frozen language model's weights packed as
//! the right operand (forward `x @ w^T` and backward `g @ w`, BERT's and RoBERTa-base's
//! shapes, 16 to 1,024 rows a task), reading the destination (the bias preset) or not; the
//! feature networks' transformed Winograd weights packed as the left operand; the values
//! against an f64 reference; and the frozen linear layer with its packs against the
//! one without, forward and backward, bit for bit. Where no BLAS that packs is loaded (the gemm
//! crate, OpenBLAS) there is nothing to compare, said so. One test per binary: the backend
//! switch is process-wide.

mod common;

use candle_core::{Device, Tensor, Var};
use common::{bits, fill};
use lqae::kernels::blas::{self, Par, Side};
use std::sync::Arc;

#[test]
fn packed_products_give_sgemms_bits() {
    if !blas::packs() {
        println!(
            "{} does not pack operands: the packed products are not taken here, nothing to \
             compare (run with LQAE_BLAS=mkl on a CPU oneMKL serves)",
            blas::backend_name()
        );
        return;
    }
    let who = blas::backend_name();
    // (out, in) of BERT-base-sized and MiniLM layers: QKV, output, FFN in and out.
    let layers = [
        (1152, 384),
        (384, 384),
        (1536, 384),
        (384, 1536),
        (2304, 768),
        (768, 3072),
    ];
    let mut cases = 0;
    for (li, &(out, inp)) in layers.iter().enumerate() {
        let w = fill(out * inp, 40 + li as u64);
        // Forward: rhs = w^T (inp x out), element (k, j) at w[j * inp + k]. Backward: rhs = w
        // (out x inp) as stored.
        let fwd = unsafe { blas::pack(Side::Rhs, inp, out, w.as_ptr(), (1, inp), 512) }
            .expect("pack w^T");
        let bwd =
            unsafe { blas::pack(Side::Rhs, out, inp, w.as_ptr(), (inp, 1), 512) }.expect("pack w");
        for m in [16, 17, 32, 33, 100, 512, 1024] {
            for (name, packed, k, n, rs) in [
                ("forward", &fwd, inp, out, (1, inp)),
                ("backward", &bwd, out, inp, (inp, 1)),
            ] {
                let x = fill(m * k, 50 + m as u64);
                let bias = fill(n, 60 + li as u64);
                for read_dst in [false, true] {
                    let start: Vec<f32> = if read_dst {
                        (0..m * n).map(|i| bias[i % n]).collect()
                    } else {
                        vec![f32::NAN; m * n]
                    };
                    let (mut plain, mut got) = (start.clone(), start.clone());
                    unsafe {
                        blas::sgemm(
                            m,
                            n,
                            k,
                            plain.as_mut_ptr(),
                            n,
                            read_dst,
                            x.as_ptr(),
                            (k, 1),
                            w.as_ptr(),
                            rs,
                            1.0,
                            1.0,
                            Par::None,
                        );
                        blas::sgemm_packed(
                            m,
                            n,
                            k,
                            got.as_mut_ptr(),
                            n,
                            read_dst,
                            packed,
                            x.as_ptr(),
                            (k, 1),
                        );
                    }
                    let differ = bits(&plain)
                        .iter()
                        .zip(bits(&got))
                        .filter(|(a, b)| **a != *b)
                        .count();
                    assert_eq!(
                        differ, 0,
                        "{who}: {name} {m} x {n} x {k} read_dst {read_dst}: {differ} of {} outputs differ",
                        m * n
                    );
                    // And the values themselves (a few rows) against f64.
                    for i in [0, m / 2, m - 1] {
                        for j in [0, n / 3, n - 1] {
                            let dot: f64 = (0..k)
                                .map(|p| x[i * k + p] as f64 * w[p * rs.0 + j * rs.1] as f64)
                                .sum();
                            let want = dot + if read_dst { bias[j] as f64 } else { 0.0 };
                            let g = got[i * n + j] as f64;
                            assert!(
                                (g - want).abs() <= 1e-5 * (k as f64).sqrt() * 4.0,
                                "{who}: {name} {m} x {n} x {k}: ({i}, {j}) {g} vs {want}"
                            );
                        }
                    }
                    cases += 1;
                }
            }
        }
    }
    assert_eq!(cases, layers.len() * 7 * 2 * 2);

    // The Winograd position products: `U_xi` (co x c) packed as the left operand, `V_xi` (c x
    // nt, a tile's channels contiguous: column stride c8) as stored; VGG16's, Inception's
    // and AlexNet's weight-heavy shapes.
    for (si, &(co, nt, c)) in [
        (512usize, 16usize, 512usize),
        (512, 32, 512),
        (512, 32, 256),
        (384, 64, 448),
        (256, 40, 384),
    ]
    .iter()
    .enumerate()
    {
        let c8 = c.div_ceil(8) * 8;
        let u = fill(co * c, 80 + si as u64);
        let v = fill(nt * c8, 90 + si as u64);
        let packed =
            unsafe { blas::pack(Side::Lhs, co, c, u.as_ptr(), (c, 1), 32) }.expect("pack U");
        let (mut plain, mut got) = (vec![f32::NAN; co * nt], vec![f32::NAN; co * nt]);
        unsafe {
            blas::sgemm(
                co,
                nt,
                c,
                plain.as_mut_ptr(),
                nt,
                false,
                u.as_ptr(),
                (c, 1),
                v.as_ptr(),
                (1, c8),
                0.0,
                1.0,
                Par::None,
            );
            blas::sgemm_packed(
                co,
                nt,
                c,
                got.as_mut_ptr(),
                nt,
                false,
                &packed,
                v.as_ptr(),
                (1, c8),
            );
        }
        assert!(
            bits(&plain) == bits(&got),
            "{who}: U packed, {co} x {nt} x {c}: the bits differ"
        );
        for (i, j) in [(0, 0), (co / 2, nt / 3), (co - 1, nt - 1)] {
            let want: f64 = (0..c)
                .map(|p| u[i * c + p] as f64 * v[j * c8 + p] as f64)
                .sum();
            let g = got[i * nt + j] as f64;
            assert!(
                (g - want).abs() <= 1e-5 * (c as f64).sqrt() * 4.0,
                "{who}: U packed {co} x {nt} x {c}: ({i}, {j}) {g} vs {want}"
            );
        }
    }

    // The frozen linear layer with its packs (the language model's) against the one without:
    // output and input gradient, bit for bit, at MiniLM's FFN shape and 16 x 64 tokens.
    let dev = Device::Cpu;
    let t = |v: Vec<f32>, shape: &[usize]| Tensor::from_vec(v, shape, &dev).unwrap();
    let (out, inp) = (1536, 384);
    let w = t(fill(out * inp, 70), &[out, inp]);
    let b = t(fill(out, 71), &[out]);
    let x = Var::from_tensor(&t(fill(16 * 64 * inp, 72), &[16, 64, inp])).unwrap();
    let packs = Arc::new(lqae::kernels::FrozenPacks::default());
    let run = |packs: Option<&Arc<lqae::kernels::FrozenPacks>>| {
        let y = lqae::kernels::frozen_linear_packed(x.as_tensor(), &w, &b, packs).unwrap();
        let g = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let y: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        let dx: Vec<f32> = g
            .get(x.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        (bits(&y), bits(&dx))
    };
    let plain = run(None);
    let packed = run(Some(&packs));
    assert!(
        packs.made() == (true, true),
        "the packed forms were not made: {packs:?}"
    );
    assert!(plain.0 == packed.0, "{who}: the packed forward differs");
    assert!(plain.1 == packed.1, "{who}: the packed backward differs");
}
