//! Timing: a kernel is one call of a hot path, timed call by call, each ended by a device
//! synchronisation (on CUDA the time is the work's, not the launch's); medians of the calls.

use super::catalog::KernelId;
use crate::error::Result;
use candle_core::Device;
use std::time::Instant;

type RunFn = Box<dyn FnMut() -> Result<()>>;

/// One timed call of a hot path.
pub struct Kernel {
    /// Which kernel, at which shape.
    pub id: KernelId,
    /// `group/shape`, e.g. `search/minilm/1024` ([`KernelId::name`]).
    pub name: String,
    /// What one call does, in words.
    pub what: String,
    /// What `items` counts (`tokens`, `images`, `flop`).
    pub unit: &'static str,
    /// Items one call processes.
    pub items: f64,
    /// Matrix-multiply FLOPs of one call (model count), for the matmul-bound kernels.
    pub flop: Option<f64>,
    pub(super) device: Device,
    run: RunFn,
}

impl Kernel {
    pub(super) fn new(
        id: KernelId,
        what: impl Into<String>,
        unit: &'static str,
        items: f64,
        flop: Option<f64>,
        device: &Device,
        run: RunFn,
    ) -> Self {
        crate::kernels::tune_allocator();
        Kernel {
            name: id.name(),
            id,
            what: what.into(),
            unit,
            items,
            flop,
            device: device.clone(),
            run,
        }
    }

    /// One call, ending with a device synchronisation.
    pub fn call(&mut self) -> Result<()> {
        (self.run)()?;
        self.device.synchronize()?;
        Ok(())
    }

    /// Calls until `budget_s` seconds have passed, at least `min_reps` and at most `max_reps`,
    /// after one untimed call.
    pub fn time_for(
        &mut self,
        budget_s: f64,
        min_reps: usize,
        max_reps: usize,
    ) -> Result<Vec<f64>> {
        time_calls(&self.device, budget_s, min_reps, max_reps, &mut self.run)
    }
}

/// Seconds of each call of `f`, every call ended by a synchronisation of `device`: calls until
/// `budget_s` seconds have passed, at least `min_reps` and at most `max_reps`, after one
/// untimed call.
pub fn time_calls(
    device: &Device,
    budget_s: f64,
    min_reps: usize,
    max_reps: usize,
    mut f: impl FnMut() -> Result<()>,
) -> Result<Vec<f64>> {
    let mut call = || -> Result<()> {
        f()?;
        device.synchronize()?;
        Ok(())
    };
    call()?;
    let start = Instant::now();
    let mut out = Vec::new();
    while out.len() < min_reps || (out.len() < max_reps && start.elapsed().as_secs_f64() < budget_s)
    {
        let t = Instant::now();
        call()?;
        out.push(t.elapsed().as_secs_f64());
    }
    Ok(out)
}

/// Median of a non-empty sample.
pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}
