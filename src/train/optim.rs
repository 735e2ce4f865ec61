//! AdamW with decoupled weight decay (not on biases or position embeddings), its moments
//! exposed for checkpoints, and the learning-rate schedule: linear warm-up, then cosine to 0.

use crate::error::{Error, Result};
use crate::model::{Params, TrainConfig};
use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use std::collections::HashMap;
use std::path::Path;

/// Learning rate at `step` (0-based): linear warm-up to `lr`, then cosine to 0 at `steps`.
pub fn lr_at(step: usize, t: &TrainConfig) -> f64 {
    if step < t.warmup_steps {
        return t.lr * (step + 1) as f64 / t.warmup_steps as f64;
    }
    let span = (t.steps - t.warmup_steps).max(1) as f64;
    let progress = ((step - t.warmup_steps) as f64 / span).min(1.0);
    0.5 * t.lr * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// AdamW with its moments exposed for checkpoints.
pub struct AdamW {
    vars: Vec<(String, Var, bool)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Number of updates done.
    pub t: usize,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    /// Update CPU parameters in one fused pass (`kernels::adamw_update`, the same bits);
    /// off: candle's ops, as on other devices.
    pub fused: bool,
}

fn decays(name: &str) -> bool {
    !(name.ends_with("bias") || name.contains("pos_embedding"))
}

impl AdamW {
    pub fn new(params: &Params, t: &TrainConfig) -> Result<Self> {
        let named = params.named_vars();
        for f in &t.frozen {
            if !named.iter().any(|(n, _)| n.starts_with(f.as_str())) {
                return Err(Error::setting(
                    "train.frozen",
                    format!("`{f}` names no parameter of this model"),
                ));
            }
        }
        let vars: Vec<(String, Var, bool)> = named
            .into_iter()
            .filter(|(n, _)| !t.frozen.iter().any(|f| n.starts_with(f.as_str())))
            .map(|(n, v)| {
                let d = decays(&n);
                (n, v, d)
            })
            .collect();
        let zeros = |v: &Var| v.as_tensor().zeros_like();
        let m = vars
            .iter()
            .map(|(_, v, _)| zeros(v))
            .collect::<candle_core::Result<_>>()?;
        let vv = vars
            .iter()
            .map(|(_, v, _)| zeros(v))
            .collect::<candle_core::Result<_>>()?;
        Ok(Self {
            vars,
            m,
            v: vv,
            t: 0,
            beta1: t.beta1,
            beta2: t.beta2,
            eps: t.eps,
            weight_decay: t.weight_decay,
            fused: true,
        })
    }

    /// Global L2 norm of the gradients.
    pub fn grad_norm(&self, grads: &GradStore) -> Result<f64> {
        let mut s = 0f64;
        for (_, var, _) in &self.vars {
            if let Some(g) = grads.get(var.as_tensor()) {
                s += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
            }
        }
        Ok(s.sqrt())
    }

    /// One update with learning rate `lr`, gradients scaled by `grad_scale` (for clipping).
    pub fn step(&mut self, grads: &GradStore, lr: f64, grad_scale: f64) -> Result<()> {
        self.t += 1;
        let (b1, b2) = (self.beta1, self.beta2);
        let c1 = 1.0 - b1.powi(self.t as i32);
        let c2 = 1.0 - b2.powi(self.t as i32);
        for (i, (_, var, decay)) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            // Gradients carry the graph they were computed through: detach, or each step's
            // moments would keep the previous step's whole graph alive.
            let g = g.detach();
            let theta = &var.as_tensor().detach();
            if self.fused {
                let k = crate::kernels::AdamWConsts {
                    b1: b1 as f32,
                    one_minus_b1: (1.0 - b1) as f32,
                    b2: b2 as f32,
                    one_minus_b2: (1.0 - b2) as f32,
                    inv_c1: (1.0 / c1) as f32,
                    inv_c2: (1.0 / c2) as f32,
                    eps: self.eps as f32,
                    lr: lr as f32,
                    lr_decay: (*decay && self.weight_decay > 0.0)
                        .then_some((lr * self.weight_decay) as f32),
                    grad_scale: (grad_scale != 1.0).then_some(grad_scale as f32),
                };
                if let Some((next, m, v)) =
                    crate::kernels::adamw_update(theta, &self.m[i], &self.v[i], &g, &k)?
                {
                    var.set(&next)?;
                    self.m[i] = m;
                    self.v[i] = v;
                    continue;
                }
            }
            let g = if grad_scale != 1.0 {
                (g * grad_scale)?
            } else {
                g
            };
            let m = ((&self.m[i] * b1)? + (&g * (1.0 - b1))?)?;
            let v = ((&self.v[i] * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let update = ((&m / c1)? / ((&v / c2)?.sqrt()? + self.eps)?)?;
            let mut next = (theta - (update * lr)?)?;
            if *decay && self.weight_decay > 0.0 {
                next = (next - (theta * (lr * self.weight_decay))?)?;
            }
            var.set(&next)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }

    /// True when no moment tensor holds on to a computation graph (no leak across steps).
    pub fn state_is_detached(&self) -> bool {
        self.m.iter().chain(&self.v).all(|t| !t.track_op())
    }

    pub(super) fn tensors(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (i, (n, _, _)) in self.vars.iter().enumerate() {
            out.insert(format!("m.{n}"), self.m[i].clone());
            out.insert(format!("v.{n}"), self.v[i].clone());
        }
        out
    }

    pub(super) fn load(&mut self, path: &Path, device: &Device) -> Result<()> {
        let mut t = candle_core::safetensors::load(path, device)
            .map_err(|e| Error::file(path, e.to_string()))?;
        for (i, (n, var, _)) in self.vars.iter().enumerate() {
            let take = |t: &mut HashMap<String, Tensor>, k: String| {
                t.remove(&k)
                    .ok_or_else(|| Error::file(path, format!("optimizer state lacks `{k}`")))
            };
            let (m, v) = (
                take(&mut t, format!("m.{n}"))?,
                take(&mut t, format!("v.{n}"))?,
            );
            if m.dims() != var.dims() || v.dims() != var.dims() {
                return Err(Error::file(
                    path,
                    format!(
                        "optimizer state for `{n}` has shape {:?}, the parameter {:?}",
                        m.dims(),
                        var.dims()
                    ),
                ));
            }
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TrainConfig;

    fn tc(steps: usize, warmup: usize) -> TrainConfig {
        let text = format!("batch_size = 4\nsteps = {steps}\nwarmup_steps = {warmup}\nlr = 1.0\n");
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn warmup_then_cosine_to_zero() {
        let t = tc(110, 10);
        assert!((lr_at(0, &t) - 0.1).abs() < 1e-12);
        assert!((lr_at(9, &t) - 1.0).abs() < 1e-12);
        assert!((lr_at(10, &t) - 1.0).abs() < 1e-12);
        assert!((lr_at(60, &t) - 0.5).abs() < 1e-12);
        assert!(lr_at(109, &t) < 1e-3 && lr_at(109, &t) > 0.0);
        assert!((1..110).all(|s| s <= 10 || lr_at(s, &t) <= lr_at(s - 1, &t)));
    }

    /// `train.frozen`: the named parameters keep their initial bits through several steps with
    /// weight decay, the others move; a prefix that names nothing is refused by key.
    #[test]
    fn frozen_parameters_keep_their_bits_and_unknown_prefixes_are_named() {
        let dev = Device::Cpu;
        let mut t = tc(10, 2);
        t.lr = 1e-2;
        t.weight_decay = 0.1;
        t.frozen = vec!["encoder".into()];
        let p = crate::model::Params::new(3, &dev);
        let enc = p.normal("encoder.w", (8, 4), 1.0).unwrap();
        let dec = p.normal("decoder.w", (4, 3), 1.0).unwrap();
        let (enc0, dec0): (Vec<f32>, Vec<f32>) = (
            enc.flatten_all().unwrap().to_vec1().unwrap(),
            dec.flatten_all().unwrap().to_vec1().unwrap(),
        );
        let mut opt = AdamW::new(&p, &t).unwrap();
        let x = crate::rng::uniform_tensor(&[5, 8], 7, &dev).unwrap();
        for step in 0..3 {
            let loss = x.matmul(&enc).unwrap().matmul(&dec).unwrap().sqr().unwrap();
            let grads = loss.mean_all().unwrap().backward().unwrap();
            assert!(
                grads.get(&enc).is_some(),
                "the frozen weight still gets a gradient"
            );
            opt.step(&grads, lr_at(step, &t), 1.0).unwrap();
        }
        let enc1: Vec<f32> = enc.flatten_all().unwrap().to_vec1().unwrap();
        let dec1: Vec<f32> = dec.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(
            enc0.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            enc1.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        assert!(dec0.iter().zip(&dec1).all(|(a, b)| a != b));
        t.frozen = vec!["encodr".into()];
        let e = AdamW::new(&p, &t).err().unwrap().to_string();
        assert!(e.contains("train.frozen") && e.contains("encodr"), "{e}");
    }

    /// The fused AdamW pass and candle's op-by-op update give the same bits: parameters and
    /// both moments, decayed and not, with and without a gradient scale, over several steps
    /// (the cached suite models were trained op by op).
    #[test]
    fn fused_adamw_gives_the_same_bits_as_the_ops() {
        let dev = Device::Cpu;
        let mut t = tc(10, 2);
        t.lr = 3e-3;
        t.weight_decay = 0.05;
        let run = |fused: bool| -> Vec<u32> {
            let p = crate::model::Params::new(3, &dev);
            let w = p.normal("w", (37, 1000), 1.0).unwrap();
            let b = p.normal("b.bias", 1000, 0.1).unwrap();
            let pos = p.normal("pos_embedding", (5, 7), 0.5).unwrap();
            let mut opt = AdamW::new(&p, &t).unwrap();
            opt.fused = fused;
            let x = crate::rng::uniform_tensor(&[4, 37], 5, &dev).unwrap();
            for step in 0..4 {
                let y = x.matmul(&w).unwrap().broadcast_add(&b).unwrap();
                let loss = (y.sqr().unwrap().mean_all().unwrap()
                    + pos.sqr().unwrap().sum_all().unwrap())
                .unwrap();
                let grads = loss.backward().unwrap();
                let scale = if step == 2 { 0.37 } else { 1.0 };
                opt.step(&grads, lr_at(step, &t), scale).unwrap();
            }
            let mut bits = Vec::new();
            for tensor in [w, b, pos].iter().chain(&opt.m).chain(&opt.v) {
                let v: Vec<f32> = tensor.flatten_all().unwrap().to_vec1().unwrap();
                bits.extend(v.iter().map(|x| x.to_bits()));
            }
            bits
        };
        // The fused pass really runs on CPU f32 (else both runs above would be the ops).
        let t1 = crate::rng::uniform_tensor(&[3, 5], 1, &dev).unwrap();
        let k = crate::kernels::AdamWConsts {
            b1: 0.9,
            one_minus_b1: 0.1,
            b2: 0.95,
            one_minus_b2: 0.05,
            inv_c1: 10.0,
            inv_c2: 20.0,
            eps: 1e-8,
            lr: 1e-3,
            lr_decay: None,
            grad_scale: None,
        };
        assert!(crate::kernels::adamw_update(
            &t1,
            &t1.zeros_like().unwrap(),
            &t1.zeros_like().unwrap(),
            &t1,
            &k
        )
        .unwrap()
        .is_some());
        let (fused, ops) = (run(true), run(false));
        assert_eq!(fused.len(), 3 * (37_000 + 1000 + 35));
        let differ = fused.iter().zip(&ops).filter(|(a, b)| a != b).count();
        assert_eq!(differ, 0, "{differ} of {} values differ", fused.len());
        assert_ne!(&fused[..10], &run_untouched()[..10], "the parameters moved");
    }

    fn run_untouched() -> Vec<u32> {
        let p = crate::model::Params::new(3, &Device::Cpu);
        let w = p.normal("w", (37, 1000), 1.0).unwrap();
        w.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect()
    }
}
