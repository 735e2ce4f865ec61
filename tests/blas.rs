//! The kernels' product `lqae::kernels::blas::sgemm` under each backend against an f64
//! reference computed here: every operand layout the kernels use (row-major and transposed, any
//! leading dimension), reading the destination or not, both scale factors, one thread and
//! split across rayon, odd and degenerate sizes. And `LQAE_BLAS` unset loads what the README
//! says it does on this CPU (oneMKL on an Intel CPU, the gemm crate elsewhere), never a silent
//! fallback. One test per binary: the backend switch is process-wide.

mod common;

use common::fill;
use lqae::kernels::blas::{self, Par};

/// An `r x c` operand stored row-major (`trans` false: element (i, j) at i * ld + j) or as the
/// transpose of a row-major `c x r` (element (i, j) at j * ld + i), with `pad` spare columns.
struct Operand {
    data: Vec<f32>,
    rs: usize,
    cs: usize,
}

impl Operand {
    fn new(r: usize, c: usize, trans: bool, pad: usize, seed: u64) -> Self {
        if trans {
            let ld = r + pad;
            Operand {
                data: fill(c * ld, seed),
                rs: 1,
                cs: ld,
            }
        } else {
            let ld = c + pad;
            Operand {
                data: fill(r * ld, seed),
                rs: ld,
                cs: 1,
            }
        }
    }
    fn at(&self, i: usize, j: usize) -> f64 {
        self.data[i * self.rs + j * self.cs] as f64
    }
}

#[test]
fn sgemm_matches_an_f64_reference_under_every_backend_and_layout() {
    let vendor = blas::cpu_vendor();
    if std::env::var("LQAE_BLAS").unwrap_or_default().is_empty() {
        let name = blas::backend_name();
        if vendor == "GenuineIntel" {
            assert!(name.starts_with("mkl"), "auto on {vendor} loaded {name}");
        } else {
            assert!(name.starts_with("gemm"), "auto on {vendor} loaded {name}");
        }
    }
    let backends: Vec<bool> = if blas::available() {
        vec![false, true]
    } else {
        vec![false]
    };
    let shapes = [
        (1, 1, 1),
        (1, 7, 5),
        (6, 1, 9),
        (5, 4, 1),
        (17, 33, 65),
        (64, 48, 192),
        (130, 70, 31),
    ];
    for on in backends {
        blas::set_enabled(on);
        let who = blas::backend_name();
        let mut cases = 0;
        for (si, &(m, n, k)) in shapes.iter().enumerate() {
            for (ta, tb, pad) in [
                (false, false, 0),
                (true, false, 3),
                (false, true, 2),
                (true, true, 0),
            ] {
                for (read_dst, alpha, beta) in
                    [(false, 0.0f32, 1.0f32), (true, 0.5, 0.7), (true, 1.0, 1.0)]
                {
                    for par in [Par::None, Par::Rayon] {
                        let a = Operand::new(m, k, ta, pad, 10 + si as u64);
                        let b = Operand::new(k, n, tb, pad, 20 + si as u64);
                        let ld = n + pad;
                        let c0 = fill(m * ld, 30 + si as u64);
                        let mut c = if read_dst {
                            c0.clone()
                        } else {
                            vec![f32::NAN; m * ld]
                        };
                        // SAFETY: the operands hold every element their strides reach.
                        unsafe {
                            blas::sgemm(
                                m,
                                n,
                                k,
                                c.as_mut_ptr(),
                                ld,
                                read_dst,
                                a.data.as_ptr(),
                                (a.rs, a.cs),
                                b.data.as_ptr(),
                                (b.rs, b.cs),
                                alpha,
                                beta,
                                par,
                            )
                        };
                        for i in 0..m {
                            for j in 0..n {
                                let dot: f64 = (0..k).map(|p| a.at(i, p) * b.at(p, j)).sum();
                                let want = beta as f64 * dot
                                    + if read_dst {
                                        alpha as f64 * c0[i * ld + j] as f64
                                    } else {
                                        0.0
                                    };
                                let got = c[i * ld + j] as f64;
                                assert!(
                                    (got - want).abs() <= 1e-5 * (k as f64).sqrt() * 4.0 + 1e-6,
                                    "{who}: {m}x{n}x{k} trans ({ta}, {tb}) pad {pad} read {read_dst} alpha {alpha} beta {beta}: ({i}, {j}) {got} vs {want}"
                                );
                            }
                        }
                        cases += 1;
                    }
                }
            }
        }
        eprintln!("{who}: {cases} cases agree with the f64 reference");
    }
}
