//! `lqae-eval gpu-check`: the same computations on the CPU and on a second device (a GPU),
//! compared, and timed on that device with a sync per call. Everything is built from seeded
//! random values, so it needs no downloaded asset (the GPU machines cannot fetch any):
//!
//! - `search/<lm>/<n>`: nearest-code ids for `n` random tokens against a random codebook of
//!   MiniLM's (30522 x 384) and RoBERTa-base's (50265 x 768) shape. Pass: every token gets the
//!   same code, or a code whose cosine similarity ties the CPU's within 1e-5 (f32 rounding
//!   may order near-ties differently).
//! - `lm-forward/minilm-shaped/16x64`: a BERT encoder of MiniLM's shape with random weights,
//!   16 x 64 input embeddings. Pass: the largest difference of the last hidden state is at most
//!   1e-3 of its largest value.
//! - `train-step/vqvae-small/<b>`: two training steps of `vqvae-small` (ViT encoder and
//!   decoder, codebook, AdamW) from the same seeded init and images. Pass: losses and global
//!   gradient norms within 1e-3 relative, the same code for at least 99% of the tokens.
//! - `train-step/lqae-small/<b>`: the same for `lqae-small`, only where the MiniLM checkpoint
//!   is on disk (said so in the report when it is not).

use super::{median, step_record, uniform};
use crate::error::{Error, Result};
use crate::lm::random::{minilm_shape, random_encoder};
use crate::model::RunConfig;
use crate::quantizer::{Quantizer, QuantizerConfig};
use crate::train::Step;
use candle_core::{Device, Tensor};

pub const VQVAE_SMALL_TOML: &str = include_str!("../../configs/vqvae-small.toml");

/// One comparison: `value` against `limit` (pass when `value <= limit`, or `>=` for
/// agreements), and the median time of one call on the device.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    pub name: String,
    pub what: String,
    pub measure: String,
    pub value: f64,
    pub limit: f64,
    pub at_least: bool,
    pub pass: bool,
    pub device_ms: Option<f64>,
    pub cpu_ms: Option<f64>,
}

impl Check {
    fn new(name: &str, what: &str, measure: &str, value: f64, limit: f64, at_least: bool) -> Self {
        let pass = if at_least {
            value >= limit
        } else {
            value <= limit
        };
        Check {
            name: name.into(),
            what: what.into(),
            measure: measure.into(),
            value,
            limit,
            at_least,
            pass: pass && value.is_finite(),
            device_ms: None,
            cpu_ms: None,
        }
    }
}

impl Check {
    /// With the median call times of `on_dev` on `dev` and of `on_cpu` on the CPU (their
    /// results are dropped).
    fn timed<A, B, EA: Into<Error>, EB: Into<Error>>(
        mut self,
        dev: &Device,
        budget: f64,
        on_dev: impl FnMut() -> std::result::Result<A, EA>,
        on_cpu: impl FnMut() -> std::result::Result<B, EB>,
    ) -> Result<Self> {
        self.device_ms = Some(time_ms(dev, budget, on_dev)?);
        self.cpu_ms = Some(time_ms(&Device::Cpu, budget, on_cpu)?);
        Ok(self)
    }
}

/// Median milliseconds of `f` (one untimed call first, at least 3 timed), each call ended by a
/// device sync.
fn time_ms<T, E: Into<Error>>(
    device: &Device,
    budget_s: f64,
    mut f: impl FnMut() -> std::result::Result<T, E>,
) -> Result<f64> {
    let times = super::time_calls(device, budget_s, 3, 50, || {
        f().map(drop).map_err(Into::into)
    })?;
    Ok(median(&times) * 1e3)
}

/// Largest `|a - b|` over the largest `|a|`.
pub fn rel_max_diff(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() {
        return f64::INFINITY;
    }
    let scale = a
        .iter()
        .fold(0f32, |m, v| m.max(v.abs()))
        .max(f32::MIN_POSITIVE);
    let d = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    (d / scale) as f64
}

/// `|a - b| / max(|a|, |b|)`.
pub fn rel_diff(a: f64, b: f64) -> f64 {
    let s = a.abs().max(b.abs());
    if s == 0.0 {
        0.0
    } else {
        (a - b).abs() / s
    }
}

/// Share of tokens whose two codes agree, or tie: the cosine similarities of the two chosen
/// rows of `codebook` (`(v, d)`) to the token (a row of `x`, `(n, d)`) within `tol`.
pub fn ids_agree_or_tie(
    x: &[f32],
    codebook: &[f32],
    d: usize,
    a: &[u32],
    b: &[u32],
    tol: f32,
) -> f64 {
    let cos = |t: &[f32], row: usize| -> f32 {
        let e = &codebook[row * d..(row + 1) * d];
        let dot: f32 = t.iter().zip(e).map(|(p, q)| p * q).sum();
        let ne: f32 = e.iter().map(|q| q * q).sum::<f32>().sqrt();
        let nt: f32 = t.iter().map(|q| q * q).sum::<f32>().sqrt();
        dot / (ne * nt).max(f32::MIN_POSITIVE)
    };
    if a.len() != b.len() || a.is_empty() {
        return 0.0;
    }
    let ok = a
        .iter()
        .zip(b)
        .enumerate()
        .filter(|(i, (p, q))| {
            p == q || {
                let t = &x[i * d..(i + 1) * d];
                (cos(t, **p as usize) - cos(t, **q as usize)).abs() <= tol
            }
        })
        .count();
    ok as f64 / a.len() as f64
}

fn search_check(
    name: &str,
    v: usize,
    d: usize,
    n: usize,
    dev: &Device,
    budget: f64,
) -> Result<Check> {
    let cpu = Device::Cpu;
    let cb = uniform(&[v, d], 1, &cpu)?;
    let x = uniform(&[n, d], 2, &cpu)?;
    let q_cpu = Quantizer::new(&cb, QuantizerConfig::default())?;
    let q_dev = Quantizer::new(&cb.to_device(dev)?, QuantizerConfig::default())?;
    let x_dev = x.to_device(dev)?;
    let a = q_cpu.nearest(&x)?.flatten_all()?.to_vec1::<u32>()?;
    let b = q_dev.nearest(&x_dev)?.flatten_all()?.to_vec1::<u32>()?;
    let agree = ids_agree_or_tie(
        &x.flatten_all()?.to_vec1::<f32>()?,
        &cb.flatten_all()?.to_vec1::<f32>()?,
        d,
        &a,
        &b,
        1e-5,
    );
    Check::new(
        &format!("search/{name}/{n}"),
        &format!("nearest code of {n} random tokens in a random {v} x {d} codebook"),
        "share of tokens with the same code (or a tie within 1e-5)",
        agree,
        1.0,
        true,
    )
    .timed(dev, budget, || q_dev.nearest(&x_dev), || q_cpu.nearest(&x))
}

fn lm_check(dev: &Device, budget: f64) -> Result<Check> {
    let cfg = minilm_shape();
    let cpu = Device::Cpu;
    let e_cpu = random_encoder(&cfg, 3, &cpu)?;
    let e_dev = random_encoder(&cfg, 3, dev)?;
    let x = uniform(&[16, 64, cfg.hidden_size], 5, &cpu)?;
    let x_dev = x.to_device(dev)?;
    let last = |e: &crate::lm::Encoder, x: &Tensor| -> Result<Vec<f32>> {
        let hs = e.forward_embeds(x, None)?;
        Ok(hs
            .last()
            .expect("hidden states")
            .flatten_all()?
            .to_device(&cpu)?
            .to_vec1::<f32>()?)
    };
    let diff = rel_max_diff(&last(&e_cpu, &x)?, &last(&e_dev, &x_dev)?);
    Check::new(
        "lm-forward/minilm-shaped/16x64",
        "frozen LM forward: MiniLM's shape with random weights, 16 x 64 input embeddings",
        "max abs(cpu - device) of the last hidden state / its max abs value",
        diff,
        1e-3,
        false,
    )
    .timed(
        dev,
        budget,
        || e_dev.forward_embeds(&x_dev, None),
        || e_cpu.forward_embeds(&x, None),
    )
}

fn train_checks(cfg: RunConfig, dev: &Device, budget: f64) -> Result<Vec<Check>> {
    let cpu = Device::Cpu;
    let name = cfg.name.clone();
    let b = cfg.train.batch_size;
    let mut on_cpu = Step::new(&cfg, &cpu)?;
    let mut on_dev = Step::new(&cfg, dev)?;
    let x = super::images(&cfg, b, 9, &cpu)?;
    let x_dev = x.to_device(dev)?;
    let mut loss_d: f64 = 0.0;
    let mut norm_d: f64 = 0.0;
    let (mut same, mut total) = (0usize, 0usize);
    for _ in 0..2 {
        let (la, ia, ga) = step_record(&on_cpu.run(&x)?)?;
        let (lb, ib, gb) = step_record(&on_dev.run(&x_dev)?)?;
        loss_d = loss_d.max(rel_diff(la, lb));
        norm_d = norm_d.max(rel_diff(ga, gb));
        same += ia.iter().zip(&ib).filter(|(p, q)| p == q).count();
        total += ia.len().max(ib.len());
    }
    let tag = format!("train-step/{name}/{b}");
    let what = format!("two {name} training steps (forward, backward, AdamW) from the same init and images, batch {b}");
    let loss = Check::new(
        &format!("{tag}/loss"),
        &what,
        "largest relative loss difference",
        loss_d,
        1e-3,
        false,
    )
    .timed(
        dev,
        budget,
        || on_dev.run(&x_dev).map(drop),
        || on_cpu.run(&x).map(drop),
    )?;
    let norm = Check::new(
        &format!("{tag}/grad-norm"),
        &what,
        "largest relative gradient-norm difference",
        norm_d,
        1e-3,
        false,
    );
    let codes = Check::new(
        &format!("{tag}/codes"),
        &what,
        "share of tokens with the same code",
        same as f64 / total.max(1) as f64,
        0.99,
        true,
    );
    Ok(vec![loss, norm, codes])
}

/// Every check on `device` against the CPU; `notes` says what was skipped and why.
pub fn run(device: &Device, budget: f64) -> Result<(Vec<Check>, Vec<String>)> {
    let mut out = Vec::new();
    let mut notes = Vec::new();
    for (name, v, d) in super::SEARCH_SHAPES {
        eprintln!("gpu-check: search/{name}/1024");
        out.push(search_check(name, *v, *d, 1024, device, budget)?);
    }
    eprintln!("gpu-check: lm-forward");
    out.push(lm_check(device, budget)?);
    eprintln!("gpu-check: train-step/vqvae-small");
    let vq = RunConfig::from_toml_str(
        VQVAE_SMALL_TOML,
        std::path::Path::new("configs/vqvae-small.toml"),
        &[],
    )?;
    out.extend(train_checks(vq, device, budget)?);
    let lqae = super::lqae_small()?;
    let lm = lqae.model.lm_name();
    // Only a checkpoint already on disk: resolving an asset name would try to fetch it.
    let dir = match crate::assets::by_name(&lm) {
        Ok(a) => crate::assets::cache_dir().join(a.name),
        Err(_) => std::path::PathBuf::from(&lm),
    };
    if dir.join("model.safetensors").is_file() {
        eprintln!("gpu-check: train-step/lqae-small");
        out.extend(train_checks(lqae, device, budget)?);
    } else {
        notes.push(format!(
            "train-step/lqae-small skipped: the `{lm}` checkpoint is not in {} (`lqae-eval fetch` puts it there)",
            dir.display()
        ));
    }
    Ok((out, notes))
}

/// The checks as a Markdown table.
pub fn markdown(checks: &[Check], notes: &[String]) -> String {
    let mut s = String::from(
        "| check | measure | value | limit | pass | device ms | CPU ms |\n|---|---|---|---|---|---|---|\n",
    );
    let ms = |v: Option<f64>| v.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into());
    for c in checks {
        s.push_str(&format!(
            "| {} | {} | {:.3e} | {} {} | {} | {} | {} |\n",
            c.name,
            c.measure,
            c.value,
            if c.at_least { ">=" } else { "<=" },
            c.limit,
            if c.pass { "yes" } else { "**NO**" },
            ms(c.device_ms),
            ms(c.cpu_ms)
        ));
    }
    for n in notes {
        s.push_str(&format!("\n{n}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparisons_see_a_difference() {
        let a = [1.0f32, -2.0, 0.5];
        assert_eq!(rel_max_diff(&a, &a), 0.0);
        let b = [1.0f32, -2.004, 0.5];
        assert!((rel_max_diff(&a, &b) - 0.002).abs() < 1e-6);
        assert!(rel_max_diff(&a, &b[..2]).is_infinite());
        assert_eq!(rel_diff(2.0, 2.0), 0.0);
        assert!((rel_diff(2.0, 1.0) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn ties_count_as_agreement_and_other_codes_do_not() {
        // Codebook rows: e0 = (1, 0), e1 = (0, 1), e2 = (1, 0) again (a tie with e0).
        let cb = [1.0f32, 0.0, 0.0, 1.0, 1.0, 0.0];
        let x = [1.0f32, 0.1, 0.2, 1.0];
        assert_eq!(ids_agree_or_tie(&x, &cb, 2, &[0, 1], &[0, 1], 1e-5), 1.0);
        assert_eq!(ids_agree_or_tie(&x, &cb, 2, &[0, 1], &[2, 1], 1e-5), 1.0);
        assert_eq!(ids_agree_or_tie(&x, &cb, 2, &[0, 1], &[1, 1], 1e-5), 0.5);
        assert_eq!(ids_agree_or_tie(&x, &cb, 2, &[0], &[0, 1], 1e-5), 0.0);
    }

    #[test]
    fn a_check_fails_beyond_its_limit_and_on_nan() {
        assert!(Check::new("a", "", "", 1e-4, 1e-3, false).pass);
        assert!(!Check::new("a", "", "", 2e-3, 1e-3, false).pass);
        assert!(!Check::new("a", "", "", 0.98, 0.99, true).pass);
        assert!(!Check::new("a", "", "", f64::NAN, 1e-3, false).pass);
    }
}
