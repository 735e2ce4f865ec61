//! Probe features: an image's tokens through the frozen LM (or the encoder blocks),
//! mean-pooled per layer, layers concatenated; and the baselines' features.

use super::spec::LayerSel;
use crate::data::batch::make_batch;
use crate::data::LabelledImages;
use crate::error::{Error, Result};
use crate::eval::zoo::Features;
use crate::lm::FrozenLm;
use crate::model::{Lqae, Vqvae};
use candle_core::{Device, Tensor};

const BATCH: usize = 64;

fn mean_tokens(h: &Tensor) -> candle_core::Result<Tensor> {
    h.mean(1)
}

fn select(lm_states: &[Tensor], enc_states: &[Tensor], layers: &LayerSel) -> Result<Vec<Tensor>> {
    Ok(match layers {
        LayerSel::Last => vec![lm_states.last().expect("states").clone()],
        LayerSel::All => lm_states.to_vec(),
        LayerSel::Encoder => enc_states.to_vec(),
        LayerSel::Everything => enc_states.iter().chain(lm_states).cloned().collect(),
        LayerSel::List(ix) => ix
            .iter()
            .map(|&i| {
                lm_states.get(i).cloned().ok_or_else(|| {
                    Error::setting(
                        "probe.layers",
                        format!("LM layer {i} does not exist (0..{})", lm_states.len() - 1),
                    )
                })
            })
            .collect::<Result<_>>()?,
    })
}

fn pooled(states: Vec<Tensor>) -> Result<Vec<Vec<f32>>> {
    let pooled: Vec<Tensor> = states
        .iter()
        .map(mean_tokens)
        .collect::<candle_core::Result<_>>()?;
    Ok(Tensor::cat(&pooled, 1)?.to_vec2()?)
}

fn batches(n: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    (0..n).step_by(BATCH).map(move |s| s..(s + BATCH).min(n))
}

fn collect(rows: Vec<Vec<f32>>, n: usize) -> Features {
    let d = rows.first().map_or(0, Vec::len);
    Features {
        x: rows.into_iter().flatten().collect(),
        n,
        d,
    }
}

/// Run `per_batch` over batches of `idx` (eval transform at `size`) and collect its rows.
fn by_batch(
    set: &LabelledImages,
    idx: &[usize],
    size: u32,
    device: &Device,
    mut per_batch: impl FnMut(&Tensor) -> Result<Vec<Vec<f32>>>,
) -> Result<Features> {
    let mut rows = Vec::new();
    for r in batches(idx.len()) {
        rows.extend(per_batch(&make_batch(set, &idx[r], size, None, device)?)?);
    }
    Ok(collect(rows, idx.len()))
}

/// LQAE features: encoder -> quantize (no masking) -> frozen LM -> mean-pooled layers.
pub fn lqae_features(
    m: &Lqae,
    set: &LabelledImages,
    idx: &[usize],
    size: u32,
    layers: &LayerSel,
    device: &Device,
) -> Result<Features> {
    by_batch(set, idx, size, device, |images| {
        let (z, enc) = m.encode_continuous(images)?;
        let codes = m.quantizer().lookup(&m.quantizer().nearest(&z)?)?;
        let lm_states = m.lm().forward_embeds(&codes, None)?;
        pooled(select(&lm_states, &enc, layers)?)
    })
}

/// LM token ids standing in for learned VQ codes: the first `k` whole-word, non-special
/// vocabulary entries (an arbitrary but fixed assignment, no alignment with language).
pub fn code_to_token_map(lm: &FrozenLm, k: usize) -> Result<Vec<u32>> {
    let v = lm.vocab();
    let ids: Vec<u32> = (0..v.len() as u32)
        .filter(|&i| {
            let t = v.token_text(i);
            !t.special
                && t.starts_word
                && t.text.chars().all(|c| c.is_alphabetic())
                && !t.text.is_empty()
        })
        .take(k)
        .collect();
    if ids.len() < k {
        return Err(Error::Msg(format!(
            "the LM vocabulary has only {} whole-word tokens for {k} VQ codes",
            ids.len()
        )));
    }
    Ok(ids)
}

/// VQ-VAE baseline: its code ids mapped to LM tokens, through the same frozen LM.
pub fn vqvae_features(
    m: &Vqvae,
    lm: &FrozenLm,
    set: &LabelledImages,
    idx: &[usize],
    size: u32,
    layers: &LayerSel,
    device: &Device,
) -> Result<Features> {
    let map = code_to_token_map(lm, m.codebook_size())?;
    let map_t = Tensor::new(map.as_slice(), device)?;
    by_batch(set, idx, size, device, |images| {
        let (z, enc) = m.encode_continuous(images)?;
        let ids = m.nearest(&z)?;
        let (b, t) = ids.dims2()?;
        let tok = map_t
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t))?;
        let lm_states = lm.forward_ids(&tok, None)?;
        pooled(select(&lm_states, &enc, layers)?)
    })
}

/// Raw pixels (first channel; the data sets here are grey or treated channel-wise the same).
pub fn pixel_features(set: &LabelledImages, idx: &[usize], size: u32) -> Result<Features> {
    by_batch(set, idx, size, &Device::Cpu, |images| {
        let (b, _c, h, w) = images.dims4()?;
        Ok(images
            .narrow(1, 0, 1)?
            .reshape((b, h * w))?
            .to_vec2::<f32>()?)
    })
}
