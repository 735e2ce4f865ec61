//! What the official code logs every step and more: how many codes a batch uses and how
//! evenly (perplexity), the share of special tokens, the encoder output's scale against the
//! code rows', how decisively each token picks its code (best cosine and its margin over the
//! runner-up), and the reconstruction of a fixed held-out batch at evaluation mask ratios 0
//! and 0.15 (`eval_loss.py`'s default). None of it touches the weights or the training RNG.

use crate::error::Result;
use crate::model::Autoencoder;
use crate::quantizer::l2_normalize_rows;
use crate::rng::Rng;
use candle_core::{Tensor, D};
use std::collections::BTreeMap;

/// Held-out images scored at each log step (the first ones of the test split).
pub const HELD_OUT: usize = 32;

/// Distinct codes, perplexity of the code histogram (exp of its entropy, nats) and the share
/// of special tokens among `ids`.
pub fn code_usage(ids: &[u32], is_special: impl Fn(u32) -> bool) -> (usize, f64, f64) {
    let mut counts = BTreeMap::<u32, usize>::new();
    for &i in ids {
        *counts.entry(i).or_default() += 1;
    }
    let n = ids.len().max(1) as f64;
    let entropy: f64 = counts
        .values()
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.ln()
        })
        .sum();
    let special = ids.iter().filter(|&&i| is_special(i)).count() as f64 / n;
    (counts.len(), entropy.exp(), special)
}

/// Per row of `z` `(n, d)`: the best and second-best cosine to the rows of `normed` `(v, d)`
/// (already L2-normalised).
pub fn top2_cosine(z: &Tensor, normed: &Tensor) -> Result<Vec<(f32, f32)>> {
    let zn = l2_normalize_rows(z)?;
    let n = zn.dim(0)?;
    let mut out = Vec::with_capacity(n);
    for r0 in (0..n).step_by(256) {
        let rows = zn.narrow(0, r0, 256.min(n - r0))?;
        let sims: Vec<Vec<f32>> = rows.matmul(&normed.t()?)?.to_vec2()?;
        for row in sims {
            let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
            for v in row {
                if v > a {
                    b = a;
                    a = v;
                } else if v > b {
                    b = v;
                }
            }
            out.push((a, b));
        }
    }
    Ok(out)
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    s / n.max(1) as f64
}

/// The diagnostics of one log step: code usage of the training batch's `ids`, and the
/// encoder scale, code margins and reconstruction of the held-out `images`.
pub fn diagnostics(
    model: &Autoencoder,
    batch_ids: &Tensor,
    held_out: &Tensor,
    seed: u64,
) -> Result<BTreeMap<String, f64>> {
    let mut d = BTreeMap::new();
    let ids: Vec<u32> = batch_ids.flatten_all()?.to_vec1()?;
    let (distinct, perplexity, special) = match model {
        Autoencoder::Lqae(m) => {
            let v = m.lm().vocab();
            code_usage(&ids, |t| v.is_special(t))
        }
        Autoencoder::Vqvae(_) => code_usage(&ids, |_| false),
    };
    d.insert("codes_distinct".into(), distinct as f64);
    d.insert("codes_perplexity".into(), perplexity);
    d.insert("codes_special_share".into(), special);
    let (z, _) = model.encode_continuous(held_out)?;
    let (b, t, w) = z.dims3()?;
    let z = z.reshape((b * t, w))?;
    let norms: Vec<f32> = z.sqr()?.sum(D::Minus1)?.sqrt()?.to_vec1()?;
    d.insert("z_norm".into(), mean(norms.iter().map(|&x| x as f64)));
    let (rows, normed) = match model {
        Autoencoder::Lqae(m) => (
            m.lm().word_embeddings().clone(),
            m.quantizer().normed().clone(),
        ),
        Autoencoder::Vqvae(m) => {
            let e = m.codebook().detach();
            let n = l2_normalize_rows(&e)?;
            (e, n)
        }
    };
    let row_norms: Vec<f32> = rows.sqr()?.sum(D::Minus1)?.sqrt()?.to_vec1()?;
    d.insert(
        "code_norm".into(),
        mean(row_norms.iter().map(|&x| x as f64)),
    );
    let top = top2_cosine(&z.detach(), &normed)?;
    d.insert("best_cosine".into(), mean(top.iter().map(|p| p.0 as f64)));
    d.insert(
        "cosine_margin".into(),
        mean(top.iter().map(|p| (p.0 - p.1) as f64)),
    );
    match model {
        Autoencoder::Lqae(m) => {
            for (key, ratio) in [("heldout_mse_mask0", 0.0), ("heldout_mse_mask0.15", 0.15)] {
                let mut rng = Rng::derive(seed, "diagnostics-mask", 0);
                d.insert(key.into(), m.recon_mse_masked(held_out, ratio, &mut rng)?);
            }
        }
        Autoencoder::Vqvae(m) => {
            let r = m.forward(held_out)?.recon.clamp(0f32, 1f32)?;
            let mse = (r - held_out)?.sqr()?.mean_all()?.to_scalar::<f32>()? as f64;
            d.insert("heldout_mse_mask0".into(), mse);
        }
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_distinct_codes_and_perplexity() {
        // Two codes, evenly: perplexity 2; one of four tokens special.
        let (n, p, s) = code_usage(&[1, 2, 1, 2], |t| t == 9);
        assert_eq!((n, s), (2, 0.0));
        assert!((p - 2.0).abs() < 1e-12);
        let (n, p, s) = code_usage(&[9, 9, 9, 3], |t| t == 9);
        assert_eq!(n, 2);
        assert!((s - 0.75).abs() < 1e-12);
        // exp(-(0.75 ln 0.75 + 0.25 ln 0.25)) = 1.7548
        assert!((p - 1.754765).abs() < 1e-5, "{p}");
    }

    #[test]
    fn top2_finds_best_and_runner_up() {
        let dev = candle_core::Device::Cpu;
        let e = Tensor::new(&[[1f32, 0.0], [0.0, 1.0], [-1.0, 0.0]], &dev).unwrap();
        let z = Tensor::new(&[[2f32, 2.0], [3.0, 0.0]], &dev).unwrap();
        let t = top2_cosine(&z, &e).unwrap();
        let h = std::f32::consts::FRAC_1_SQRT_2;
        assert!(
            (t[0].0 - h).abs() < 1e-6 && (t[0].1 - h).abs() < 1e-6,
            "{t:?}"
        );
        assert!((t[1].0 - 1.0).abs() < 1e-6 && t[1].1.abs() < 1e-6, "{t:?}");
    }
}
