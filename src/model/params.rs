//! Trainable parameters: created from the project's seeded generator (candle cannot seed its
//! CPU generator) and kept in a `VarMap` under their full names, which are also the tensor
//! names in checkpoints.

use crate::rng::Rng;
use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::VarMap;
use std::cell::RefCell;
use std::rc::Rc;

#[derive(Clone)]
pub struct Params {
    varmap: VarMap,
    rng: Rc<RefCell<Rng>>,
    device: Device,
    prefix: String,
}

impl Params {
    pub fn new(seed: u64, device: &Device) -> Self {
        Self {
            varmap: VarMap::new(),
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

    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    fn insert(&self, name: &str, t: Tensor) -> Result<Tensor> {
        let full = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        };
        let var = Var::from_tensor(&t)?;
        let mut data = self.varmap.data().lock().expect("varmap lock");
        if data.contains_key(&full) {
            candle_core::bail!("parameter `{full}` is defined twice");
        }
        data.insert(full, var.clone());
        Ok(var.as_tensor().clone())
    }

    pub fn normal<S: Into<Shape>>(&self, name: &str, shape: S, std: f64) -> Result<Tensor> {
        let shape = shape.into();
        let v = self.rng.borrow_mut().normal_vec(shape.elem_count(), std);
        self.insert(name, Tensor::from_vec(v, shape, &self.device)?)
    }

    pub fn zeros<S: Into<Shape>>(&self, name: &str, shape: S) -> Result<Tensor> {
        self.insert(name, Tensor::zeros(shape, DType::F32, &self.device)?)
    }

    /// A parameter filled with `value`.
    pub fn full<S: Into<Shape>>(&self, name: &str, shape: S, value: f64) -> Result<Tensor> {
        let t = (Tensor::ones(shape, DType::F32, &self.device)? * value)?;
        self.insert(name, t)
    }

    /// All parameters, sorted by name.
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        let data = self.varmap.data().lock().expect("varmap lock");
        let mut v: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}
