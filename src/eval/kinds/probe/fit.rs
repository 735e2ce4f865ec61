//! The probe itself: standardisation with train statistics, a multinomial logistic regression
//! (linfa-logistic) whose L2 strength is picked on a held-out part of train, and its scores.

use super::spec::ProbeSettings;
use crate::error::{Error, Result};
use crate::eval::stats::proportion;
use crate::eval::stats::Metric;
use crate::eval::zoo::Features;
use crate::rng::Rng;
use linfa::prelude::*;
use linfa_logistic::MultiLogisticRegression;
use ndarray::{Array1, Array2};
use std::collections::BTreeMap;

/// Probe outcome on the test split.
pub struct ProbeOutcome {
    pub alpha: f64,
    pub val_accuracy: BTreeMap<String, f64>,
    pub pred: Vec<u32>,
    /// The five most probable classes of each test example.
    pub top5: Vec<Vec<u32>>,
}

// Flat row-major indexing reads clearer here than iterator chains.
#[allow(clippy::needless_range_loop)]
fn standardise(train: &Features, others: &mut [&mut Features]) -> Features {
    let (n, d) = (train.n, train.d);
    let mut mean = vec![0f64; d];
    let mut var = vec![0f64; d];
    for i in 0..n {
        for j in 0..d {
            mean[j] += train.x[i * d + j] as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n.max(1) as f64);
    for i in 0..n {
        for j in 0..d {
            var[j] += (train.x[i * d + j] as f64 - mean[j]).powi(2);
        }
    }
    let std: Vec<f64> = var
        .iter()
        .map(|v| (v / n.max(1) as f64).sqrt().max(1e-6))
        .collect();
    let apply = |f: &mut Features| {
        for i in 0..f.n {
            for j in 0..d {
                f.x[i * d + j] = ((f.x[i * d + j] as f64 - mean[j]) / std[j]) as f32;
            }
        }
    };
    let mut t = train.clone();
    apply(&mut t);
    for o in others.iter_mut() {
        apply(o);
    }
    t
}

fn to_array(f: &Features, rows: &[usize]) -> Array2<f64> {
    Array2::from_shape_fn((rows.len(), f.d), |(i, j)| f.x[rows[i] * f.d + j] as f64)
}

fn fit(
    x: Array2<f64>,
    y: &[u32],
    alpha: f64,
    iters: u64,
) -> Result<linfa_logistic::MultiFittedLogisticRegression<f64, usize>> {
    let ds = Dataset::new(x, Array1::from_iter(y.iter().map(|&l| l as usize)));
    MultiLogisticRegression::default()
        .alpha(alpha)
        .max_iterations(iters)
        .fit(&ds)
        .map_err(|e| Error::Msg(format!("logistic regression (alpha {alpha}) failed: {e}")))
}

/// Standardise with train statistics, pick the L2 strength on a held-out part of train, refit
/// on all of train, predict test.
pub fn fit_probe(
    train: &Features,
    train_y: &[u32],
    test: &Features,
    s: &ProbeSettings,
) -> Result<ProbeOutcome> {
    if train.d != test.d {
        return Err(Error::Msg(format!(
            "train features have {} dims, test {}",
            train.d, test.d
        )));
    }
    let mut test = test.clone();
    let train = standardise(train, &mut [&mut test]);
    let perm = Rng::derive(s.seed, "probe-val", 0).permutation(train.n);
    let n_val = ((train.n as f64 * s.val_fraction).round() as usize)
        .clamp(1, train.n.saturating_sub(1).max(1));
    let (val_rows, fit_rows) = perm.split_at(n_val);
    let mut val_accuracy = BTreeMap::new();
    let mut best = (f64::NEG_INFINITY, s.l2_grid.first().copied().unwrap_or(1.0));
    for &alpha in &s.l2_grid {
        let y: Vec<u32> = fit_rows.iter().map(|&i| train_y[i]).collect();
        let model = fit(to_array(&train, fit_rows), &y, alpha, s.max_iterations)?;
        let pred = model.predict(&to_array(&train, val_rows));
        let acc = val_rows
            .iter()
            .zip(pred.iter())
            .filter(|(&i, &p)| train_y[i] as usize == p)
            .count() as f64
            / val_rows.len() as f64;
        val_accuracy.insert(format!("{alpha:e}"), acc);
        if acc > best.0 {
            best = (acc, alpha);
        }
    }
    let all: Vec<usize> = (0..train.n).collect();
    let model = fit(to_array(&train, &all), train_y, best.1, s.max_iterations)?;
    let rows: Vec<usize> = (0..test.n).collect();
    let xt = to_array(&test, &rows);
    let probs = model.predict_probabilities(&xt);
    let classes: Vec<u32> = model.classes().iter().map(|&c| c as u32).collect();
    let mut pred = Vec::with_capacity(test.n);
    let mut top5 = Vec::with_capacity(test.n);
    for row in probs.rows() {
        let mut order: Vec<usize> = (0..row.len()).collect();
        // Highest probability first; ties to the lower class id.
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        pred.push(classes[order[0]]);
        top5.push(order.iter().take(5).map(|&k| classes[k]).collect());
    }
    Ok(ProbeOutcome {
        alpha: best.1,
        val_accuracy,
        pred,
        top5,
    })
}

/// Top-1, top-5 (more than 5 classes) and balanced accuracy, with intervals.
pub fn score(
    labels: &[u32],
    out: &ProbeOutcome,
    n_classes: usize,
    tolerance: f64,
    seed: u64,
) -> BTreeMap<String, Metric> {
    let n = labels.len();
    let correct: Vec<bool> = labels.iter().zip(&out.pred).map(|(l, p)| l == p).collect();
    let mut m = BTreeMap::new();
    m.insert(
        "top1".to_string(),
        proportion(correct.iter().filter(|&&c| c).count(), n, tolerance),
    );
    if n_classes > 5 {
        let k = labels
            .iter()
            .zip(&out.top5)
            .filter(|(l, t)| t.contains(l))
            .count();
        m.insert("top5".to_string(), proportion(k, n, tolerance));
    }
    let balanced = |rows: &[usize]| {
        let mut hit = vec![0usize; n_classes];
        let mut tot = vec![0usize; n_classes];
        for &i in rows {
            tot[labels[i] as usize] += 1;
            hit[labels[i] as usize] += usize::from(correct[i]);
        }
        let present: Vec<f64> = (0..n_classes)
            .filter(|&c| tot[c] > 0)
            .map(|c| hit[c] as f64 / tot[c] as f64)
            .collect();
        present.iter().sum::<f64>() / present.len().max(1) as f64
    };
    let all: Vec<usize> = (0..n).collect();
    let value = balanced(&all);
    // Bootstrap (1000 seeded resamples) for the standard error and percentile interval.
    let mut rng = Rng::derive(seed, "bootstrap", 0);
    let mut boots: Vec<f64> = (0..1000)
        .map(|_| balanced(&(0..n).map(|_| rng.below(n)).collect::<Vec<_>>()))
        .collect();
    boots.sort_by(f64::total_cmp);
    let mean = boots.iter().sum::<f64>() / boots.len() as f64;
    let se =
        (boots.iter().map(|b| (b - mean).powi(2)).sum::<f64>() / (boots.len() - 1) as f64).sqrt();
    m.insert(
        "balanced".to_string(),
        Metric {
            value,
            se,
            ci95: [boots[25], boots[974]],
            n,
            tolerance,
            higher_is_better: true,
        },
    );
    m
}
