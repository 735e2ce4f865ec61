//! Trainable parameters: created from the project's seeded generator (candle cannot seed its
//! CPU generator) and kept in a `VarMap` under their full names, which are also the tensor
//! names in checkpoints.
//!
//! A *stack* ([`Params::stacked_normal`]) is one parameter whose column blocks are several
//! named weights side by side (a block's `[query | key | value]`): one product in the forward
//! pass, one weight gradient in the backward pass, where a concatenation each step had copied
//! the weights and its backward the gradients. Files (checkpoints, the optimizer's moments,
//! the PyTorch peer's inputs) keep each block under its own name ([`Params::parts`]), as
//! before stacks, so models saved either way load either way.

use crate::rng::Rng;
use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::VarMap;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

/// Each stack's name -> its column blocks' full names and widths, in column order.
type Stacks = HashMap<String, Vec<(String, usize)>>;

#[derive(Clone)]
pub struct Params {
    varmap: VarMap,
    stacks: Rc<RefCell<Stacks>>,
    rng: Rc<RefCell<Rng>>,
    device: Device,
    prefix: String,
}

/// One weight as files name it: a parameter, or a column block of a stack.
#[derive(Clone)]
pub struct Part {
    /// The name in files.
    pub name: String,
    /// The parameter that holds it.
    pub var: Var,
    /// Its columns `(first, count)` when `var` is a stack.
    pub cols: Option<(usize, usize)>,
}

/// A parameter's value from its parts' values in column order ([`Params::parts_of`]): one
/// part as it is, a stack's side by side.
pub fn join_parts(mut parts: Vec<Tensor>) -> Result<Tensor> {
    if parts.len() == 1 {
        return Ok(parts.pop().expect("one part"));
    }
    Tensor::cat(&parts, 1)
}

impl Part {
    /// This part of `t`, a tensor of its parameter's shape (the parameter, its gradient, a
    /// moment): `t` itself, or a view of its columns.
    pub fn of(&self, t: &Tensor) -> Result<Tensor> {
        match self.cols {
            None => Ok(t.clone()),
            Some((first, n)) => t.narrow(1, first, n),
        }
    }
}

impl Params {
    pub fn new(seed: u64, device: &Device) -> Self {
        Self {
            varmap: VarMap::new(),
            stacks: Rc::default(),
            rng: Rc::new(RefCell::new(Rng::derive(seed, "init", 0))),
            device: device.clone(),
            prefix: String::new(),
        }
    }

    /// A scope whose names start with `name.`.
    pub fn pp(&self, name: &str) -> Self {
        let prefix = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        };
        Self {
            prefix,
            ..self.clone()
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Whether `full` names a parameter or a part of a stack already.
    fn taken(&self, full: &str) -> bool {
        let data = self.varmap.data().lock().expect("varmap lock");
        data.contains_key(full)
            || self
                .stacks
                .borrow()
                .values()
                .any(|ps| ps.iter().any(|(n, _)| n == full))
    }

    fn full_name(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    fn insert(&self, name: &str, t: Tensor) -> Result<Tensor> {
        let full = self.full_name(name);
        if self.taken(&full) {
            candle_core::bail!("parameter `{full}` is defined twice");
        }
        let var = Var::from_tensor(&t)?;
        let mut data = self.varmap.data().lock().expect("varmap lock");
        data.insert(full, var.clone());
        Ok(var.as_tensor().clone())
    }

    pub fn normal<S: Into<Shape>>(&self, name: &str, shape: S, std: f64) -> Result<Tensor> {
        let shape = shape.into();
        let v = self.rng.borrow_mut().normal_vec(shape.elem_count(), std);
        self.insert(name, Tensor::from_vec(v, shape, &self.device)?)
    }

    /// A stack of `rows`-row weights `parts` (name, columns), drawn one after the other as
    /// [`Params::normal`] draws them (the same values as separate parameters) and kept side by
    /// side in one `rows x sum(columns)` parameter, named `[a|b|...]` after its parts.
    pub fn stacked_normal(&self, parts: &[(&str, usize)], rows: usize, std: f64) -> Result<Tensor> {
        let mut blocks = Vec::with_capacity(parts.len());
        for (_, cols) in parts {
            let v = self.rng.borrow_mut().normal_vec(rows * cols, std);
            blocks.push(Tensor::from_vec(v, (rows, *cols), &self.device)?);
        }
        let names: Vec<&str> = parts.iter().map(|(n, _)| *n).collect();
        let name = format!("[{}]", names.join("|"));
        let full: Vec<(String, usize)> =
            parts.iter().map(|(n, c)| (self.full_name(n), *c)).collect();
        for (i, (n, _)) in full.iter().enumerate() {
            if self.taken(n) || full[..i].iter().any(|(m, _)| m == n) {
                candle_core::bail!("parameter `{n}` is defined twice");
            }
        }
        let t = self.insert(&name, Tensor::cat(&blocks, 1)?)?;
        self.stacks.borrow_mut().insert(self.full_name(&name), full);
        Ok(t)
    }

    pub fn zeros<S: Into<Shape>>(&self, name: &str, shape: S) -> Result<Tensor> {
        self.insert(name, Tensor::zeros(shape, DType::F32, &self.device)?)
    }

    /// A parameter filled with `value`.
    pub fn full<S: Into<Shape>>(&self, name: &str, shape: S, value: f64) -> Result<Tensor> {
        let t = (Tensor::ones(shape, DType::F32, &self.device)? * value)?;
        self.insert(name, t)
    }

    /// All parameters, sorted by name (a stack under its `[a|b|...]` name).
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        let data = self.varmap.data().lock().expect("varmap lock");
        let mut v: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// The parts of the parameter `name` as files name them: the parameter itself, or a
    /// stack's column blocks in column order.
    pub fn parts_of(&self, name: &str, var: &Var) -> Vec<Part> {
        match self.stacks.borrow().get(name) {
            None => vec![Part {
                name: name.to_string(),
                var: var.clone(),
                cols: None,
            }],
            Some(blocks) => {
                let mut first = 0;
                blocks
                    .iter()
                    .map(|(n, c)| {
                        let p = Part {
                            name: n.clone(),
                            var: var.clone(),
                            cols: Some((first, *c)),
                        };
                        first += c;
                        p
                    })
                    .collect()
            }
        }
    }

    /// Every weight as files name it, sorted by that name (the order of the parameters
    /// before stacks, which the gradient norm sums in).
    pub fn parts(&self) -> Vec<Part> {
        let mut v: Vec<Part> = self
            .named_vars()
            .iter()
            .flat_map(|(n, var)| self.parts_of(n, var))
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Every weight's current value under its name in files (stacks split): a plain
    /// parameter's tensor shares its storage (a later update shows in it), a stack's parts
    /// are copies.
    pub fn tensors(&self) -> Result<HashMap<String, Tensor>> {
        self.parts()
            .into_iter()
            .map(|p| Ok((p.name.clone(), p.of(p.var.as_tensor())?.contiguous()?)))
            .collect()
    }

    /// Write every weight to a safetensors file under its name ([`Params::tensors`]).
    pub fn save(&self, path: &Path) -> Result<()> {
        candle_core::safetensors::save(&self.tensors()?, path)
    }

    /// Set every parameter from a safetensors file that holds each weight under its name
    /// (a stack from its parts); the file's other tensors are not read.
    pub fn load(&self, path: &Path) -> Result<()> {
        // SAFETY: the file is mapped read-only for this call; candle checks every tensor's
        // bounds against the mapping.
        let file = unsafe { candle_core::safetensors::MmapedSafetensors::new(path)? };
        for (name, var) in self.named_vars() {
            let mut blocks = Vec::new();
            for p in self.parts_of(&name, &var) {
                let t = file
                    .load(&p.name, var.device())
                    .map_err(|e| candle_core::Error::Msg(format!("tensor `{}`: {e}", p.name)))?;
                let want = p.of(var.as_tensor())?;
                if t.dims() != want.dims() || t.dtype() != want.dtype() {
                    candle_core::bail!(
                        "tensor `{}` is {:?} {:?}, this model's is {:?} {:?}",
                        p.name,
                        t.dtype(),
                        t.dims(),
                        want.dtype(),
                        want.dims()
                    );
                }
                blocks.push(t);
            }
            var.set(&join_parts(blocks)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(t: &Tensor) -> Vec<u32> {
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// A stack holds the values its parts get as separate parameters; files name the parts,
    /// so a stack loads a file written by separate parameters and the other way round; a
    /// missing or misshapen part is named.
    #[test]
    fn stacks_are_saved_and_loaded_as_their_parts() {
        let dev = Device::Cpu;
        let sep = Params::new(9, &dev);
        let q = sep.normal("blk.query", (4, 3), 0.5).unwrap();
        let k = sep.normal("blk.key", (4, 2), 0.5).unwrap();
        let z = sep.zeros("blk.bias", 3).unwrap();
        let st = Params::new(9, &dev);
        let qk = st
            .pp("blk")
            .stacked_normal(&[("query", 3), ("key", 2)], 4, 0.5)
            .unwrap();
        st.pp("blk").zeros("bias", 3).unwrap();
        assert_eq!(bits(&Tensor::cat(&[&q, &k], 1).unwrap()), bits(&qk));
        let names: Vec<String> = st.named_vars().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["blk.[query|key]", "blk.bias"]);

        let dir = tempfile::tempdir().unwrap();
        let (fs, ft) = (dir.path().join("sep.st"), dir.path().join("st.st"));
        sep.save(&fs).unwrap();
        st.save(&ft).unwrap();
        let saved = candle_core::safetensors::load(&ft, &dev).unwrap();
        let mut keys: Vec<&String> = saved.keys().collect();
        keys.sort();
        assert_eq!(keys, ["blk.bias", "blk.key", "blk.query"]);
        assert_eq!(bits(&saved["blk.key"]), bits(&k));

        // Another draw, then each loads the other's file and gets the first values back.
        let other = Params::new(10, &dev);
        let qk2 = other
            .pp("blk")
            .stacked_normal(&[("query", 3), ("key", 2)], 4, 0.5)
            .unwrap();
        other.pp("blk").zeros("bias", 3).unwrap();
        assert_ne!(bits(&qk2), bits(&qk));
        other.load(&fs).unwrap();
        assert_eq!(bits(&qk2), bits(&qk));
        let (q0, k0) = (bits(&q), bits(&k));
        let (_, qv) = &sep.named_vars()[2];
        qv.set(&q.zeros_like().unwrap()).unwrap();
        sep.load(&ft).unwrap();
        assert_eq!((bits(&q), bits(&k)), (q0, k0));
        assert_eq!(bits(&z), vec![0; 3]);

        // A part's name is a parameter's name: taken twice is refused.
        let e = st
            .pp("blk")
            .normal("query", 1, 1.0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`blk.query`") && e.contains("twice"), "{e}");
        let e = st
            .pp("blk")
            .stacked_normal(&[("bias", 1), ("other", 1)], 4, 0.5)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`blk.bias`") && e.contains("twice"), "{e}");

        // A file without a part, and one with a part of another shape.
        let mut t = saved.clone();
        t.remove("blk.key");
        let bad = dir.path().join("bad.st");
        candle_core::safetensors::save(&t, &bad).unwrap();
        let e = st.load(&bad).unwrap_err().to_string();
        assert!(e.contains("blk.key"), "{e}");
        t.insert(
            "blk.key".into(),
            Tensor::zeros((2, 4), DType::F32, &dev).unwrap(),
        );
        candle_core::safetensors::save(&t, &bad).unwrap();
        let e = st.load(&bad).unwrap_err().to_string();
        assert!(
            e.contains("blk.key") && e.contains("[2, 4]") && e.contains("[4, 2]"),
            "{e}"
        );
    }
}
