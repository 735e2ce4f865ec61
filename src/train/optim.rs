//! AdamW with decoupled weight decay (not on biases or position embeddings), its moments
//! exposed for checkpoints, and the learning-rate schedule: linear warm-up, then cosine to 0.

use crate::error::{Error, Result};
use crate::model::{Params, Part, TrainConfig};
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
    /// Each var's parts as files name them (`Params::parts_of`): the moments' names in
    /// checkpoints.
    parts: Vec<Vec<Part>>,
    /// The trained parts sorted by name, each with its var's index: the order the gradient
    /// norm sums in (the parameters' order before stacks, so the same bits).
    norm_order: Vec<(usize, Part)>,
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
        let all_parts = params.parts();
        let frozen_by = |n: &str| t.frozen.iter().find(|f| n.starts_with(f.as_str()));
        for f in &t.frozen {
            if !all_parts.iter().any(|p| p.name.starts_with(f.as_str())) {
                return Err(Error::setting(
                    "train.frozen",
                    format!("`{f}` names no parameter of this model"),
                ));
            }
        }
        let mut vars: Vec<(String, Var, bool)> = Vec::new();
        let mut parts = Vec::new();
        for (n, v) in named {
            let ps = params.parts_of(&n, &v);
            let list = || {
                ps.iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let by: Vec<&String> = ps.iter().filter_map(|p| frozen_by(&p.name)).collect();
            if by.len() == ps.len() {
                continue;
            }
            if let Some(f) = by.first() {
                return Err(Error::setting(
                    "train.frozen",
                    format!(
                        "`{f}` names some of {}, which are one parameter here (trained together): freeze all of them or none",
                        list()
                    ),
                ));
            }
            let d = decays(&ps[0].name);
            if ps.iter().any(|p| decays(&p.name) != d) {
                return Err(Error::Msg(format!(
                    "the parts of one parameter ({}) differ in weight decay",
                    list()
                )));
            }
            vars.push((n, v, d));
            parts.push(ps);
        }
        let mut norm_order: Vec<(usize, Part)> = parts
            .iter()
            .enumerate()
            .flat_map(|(i, ps)| ps.iter().map(move |p| (i, p.clone())))
            .collect();
        norm_order.sort_by(|a, b| a.1.name.cmp(&b.1.name));
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
            parts,
            norm_order,
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

    /// Global L2 norm of the gradients: each part's sum of squares in f32, added up in f64
    /// in the order of the parts' names.
    pub fn grad_norm(&self, grads: &GradStore) -> Result<f64> {
        let mut s = 0f64;
        for (i, part) in &self.norm_order {
            if let Some(g) = grads.get(self.vars[*i].1.as_tensor()) {
                s += part.of(g)?.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
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

    /// The moments under `m.NAME` and `v.NAME` for each part's name in files.
    pub(super) fn tensors(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for (i, parts) in self.parts.iter().enumerate() {
            for p in parts {
                out.insert(format!("m.{}", p.name), p.of(&self.m[i])?.contiguous()?);
                out.insert(format!("v.{}", p.name), p.of(&self.v[i])?.contiguous()?);
            }
        }
        Ok(out)
    }

    pub(super) fn load(&mut self, path: &Path, device: &Device) -> Result<()> {
        let mut t = candle_core::safetensors::load(path, device)
            .map_err(|e| Error::file(path, e.to_string()))?;
        for (i, parts) in self.parts.iter().enumerate() {
            let (mut ms, mut vs) = (Vec::new(), Vec::new());
            for p in parts {
                let want = p.of(p.var.as_tensor())?;
                let mut take = |k: String| {
                    let x = t
                        .remove(&k)
                        .ok_or_else(|| Error::file(path, format!("optimizer state lacks `{k}`")))?;
                    if x.dims() != want.dims() {
                        return Err(Error::file(
                            path,
                            format!(
                                "optimizer state `{k}` has shape {:?}, the parameter {:?}",
                                x.dims(),
                                want.dims()
                            ),
                        ));
                    }
                    Ok(x)
                };
                ms.push(take(format!("m.{}", p.name))?);
                vs.push(take(format!("v.{}", p.name))?);
            }
            self.m[i] = crate::model::params::join_parts(ms)?;
            self.v[i] = crate::model::params::join_parts(vs)?;
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

    /// A stack (`Params::stacked_normal`) trains as its parts did as separate parameters: the
    /// same initial values, gradient norms, updates and moments, bit for bit, with decay and a
    /// clipping scale; the moments are saved under the parts' names and load either way; a
    /// `train.frozen` prefix that names some of a stack's parts is refused, naming them.
    #[test]
    fn a_stack_trains_as_its_parts_did_as_separate_parameters() {
        let dev = Device::Cpu;
        let mut t = tc(10, 2);
        t.lr = 1e-2;
        t.weight_decay = 0.1;
        let bits = |t: &Tensor| -> Vec<u32> {
            let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            v.iter().map(|x| x.to_bits()).collect()
        };
        let x = crate::rng::uniform_tensor(&[5, 4], 7, &dev).unwrap();
        // Separate: a.query, a.key, a.out; stacked: a.[query|key], a.out. The same draws.
        let sep = crate::model::Params::new(5, &dev);
        let q = sep.normal("a.query", (4, 3), 1.0).unwrap();
        let k = sep.normal("a.key", (4, 3), 1.0).unwrap();
        let o = sep.normal("a.out", (6, 2), 1.0).unwrap();
        let st = crate::model::Params::new(5, &dev);
        let qk = st
            .pp("a")
            .stacked_normal(&[("query", 3), ("key", 3)], 4, 1.0)
            .unwrap();
        let o2 = st.normal("a.out", (6, 2), 1.0).unwrap();
        let cat = || Tensor::cat(&[&q, &k], 1).unwrap();
        assert_eq!(bits(&cat()), bits(&qk));
        let names: Vec<String> = st.parts().into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["a.key", "a.out", "a.query"]);
        let (mut os, mut ot) = (AdamW::new(&sep, &t).unwrap(), AdamW::new(&st, &t).unwrap());
        for step in 0..4 {
            let loss = |w: &Tensor, o: &Tensor| {
                let y = x.matmul(w).unwrap().matmul(o).unwrap();
                y.sqr().unwrap().mean_all().unwrap().backward().unwrap()
            };
            let (gs, gt) = (loss(&cat(), &o), loss(&qk, &o2));
            let (ns, nt) = (os.grad_norm(&gs).unwrap(), ot.grad_norm(&gt).unwrap());
            assert_eq!(
                ns.to_bits(),
                nt.to_bits(),
                "step {step}: norms {ns} and {nt}"
            );
            let scale = if step == 2 { 0.37 } else { 1.0 };
            os.step(&gs, lr_at(step, &t), scale).unwrap();
            ot.step(&gt, lr_at(step, &t), scale).unwrap();
        }
        assert_eq!(bits(&cat()), bits(&qk));
        assert_eq!(bits(&o), bits(&o2));
        let (ms, mt) = (os.tensors().unwrap(), ot.tensors().unwrap());
        let mut keys: Vec<&String> = mt.keys().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "m.a.key",
                "m.a.out",
                "m.a.query",
                "v.a.key",
                "v.a.out",
                "v.a.query"
            ]
        );
        for (name, value) in &ms {
            assert_eq!(bits(value), bits(&mt[name]), "{name}");
        }
        // The separate run's moments load into the stack (and give the same state back).
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("optimizer.safetensors");
        candle_core::safetensors::save(&ms, &file).unwrap();
        let mut fresh = AdamW::new(&st, &t).unwrap();
        fresh.load(&file, &dev).unwrap();
        for (name, value) in fresh.tensors().unwrap() {
            assert_eq!(bits(&value), bits(&ms[&name]), "{name}");
        }
        t.frozen = vec!["a.query".into()];
        let e = AdamW::new(&st, &t).err().unwrap().to_string();
        assert!(
            e.contains("train.frozen") && e.contains("`a.query`") && e.contains("a.query, a.key"),
            "{e}"
        );
        t.frozen = vec!["a.".into()];
        assert_eq!(AdamW::new(&st, &t).unwrap().vars.len(), 0);
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
