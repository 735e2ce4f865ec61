//! Probe features: an image's tokens through the frozen LM (or the encoder blocks),
//! mean-pooled per layer, layers concatenated; and the baselines' features.

use super::spec::LayerSel;
use crate::data::batch::make_batch;
use crate::data::{LabelledImages, Split};
use crate::error::{Error, Result};
use crate::eval::tokens_file::{data_image_id, Field, Precomputed};
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

/// Features of precomputed tokens (`tokens.file`) through the frozen LM: the same pooling as
/// the model's tokens; sequences of unequal length (text tokenized by the LM) are padded and
/// masked, the mean taken over real tokens only.
#[allow(clippy::too_many_arguments)]
pub fn file_features(
    lm: &FrozenLm,
    file: &Precomputed,
    field: Field,
    set: &LabelledImages,
    split: Split,
    idx: &[usize],
    layers: &LayerSel,
    device: &Device,
) -> Result<Features> {
    let vocab = lm.vocab().len();
    let max = lm.config().max_tokens();
    let mut rows = Vec::new();
    for r in batches(idx.len()) {
        let mut seqs: Vec<Vec<u32>> = Vec::with_capacity(r.len());
        for &i in &idx[r] {
            let e = file.get(set, split, i)?;
            let id = data_image_id(split, i);
            seqs.push(match field {
                Field::Ids => file.ids_of(e, &id, vocab)?.to_vec(),
                Field::Text => {
                    let t = lm.tokenize(&file.text_of(e, &id)?.join(" "), false)?;
                    if t.is_empty() {
                        return Err(Error::file(
                            &file.files[0],
                            format!("image `{id}`: its text gives no LM tokens"),
                        ));
                    }
                    t
                }
            });
            let n = seqs.last().map_or(0, Vec::len);
            if n > max {
                return Err(Error::file(
                    &file.files[0],
                    format!("image `{id}` is {n} LM tokens, more than the LM's {max} positions; write fewer tokens per image (or words the LM's tokenizer keeps whole)"),
                ));
            }
        }
        let s = seqs.iter().map(Vec::len).max().unwrap_or(0);
        let b = seqs.len();
        if seqs.iter().all(|q| q.len() == s) {
            let ids = Tensor::from_vec(seqs.concat(), (b, s), device)?;
            rows.extend(pooled(select(&lm.forward_ids(&ids, None)?, &[], layers)?)?);
            continue;
        }
        let pad = lm.vocab().special_ids.pad.unwrap_or(0);
        let mut flat = Vec::with_capacity(b * s);
        let mut mask = Vec::with_capacity(b * s);
        for q in &seqs {
            flat.extend(
                q.iter()
                    .copied()
                    .chain(std::iter::repeat_n(pad, s - q.len())),
            );
            mask.extend((0..s).map(|j| (j < q.len()) as u8 as f32));
        }
        let ids = Tensor::from_vec(flat, (b, s), device)?;
        let m = Tensor::from_vec(mask, (b, s), device)?;
        let states = select(&lm.forward_ids(&ids, Some(&m))?, &[], layers)?;
        let w = m.unsqueeze(2)?;
        let count = m.sum_keepdim(1)?;
        let pooled: Vec<Tensor> = states
            .iter()
            .map(|h| h.broadcast_mul(&w)?.sum(1)?.broadcast_div(&count))
            .collect::<candle_core::Result<_>>()?;
        rows.extend(Tensor::cat(&pooled, 1)?.to_vec2::<f32>()?);
    }
    Ok(collect(rows, idx.len()))
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
