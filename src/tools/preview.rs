//! A trained run's tokens and reconstructions at a glance (`lqae-eval encode --ckpt`,
//! `lqae-eval reconstruct --ckpt`): the first test images of the data set the run was trained
//! on, their tokens with usage statistics, or a grid of originals above reconstructions.

use crate::data::{self, Split};
use crate::error::Result;
use crate::metrics::TokenStats;
use crate::model::Autoencoder;
use crate::train::CheckpointState;
use candle_core::{Device, Tensor};
use std::path::Path;

/// A run's newest checkpoint (or a checkpoint folder) and the first `n` test images of the
/// data set its configuration names.
pub struct Preview {
    pub model: Autoencoder,
    pub state: CheckpointState,
    pub images: Tensor,
    pub test: data::LabelledImages,
}

/// What [`Preview::tokens`] found.
pub struct PreviewTokens {
    /// Per image: its class and its token text.
    pub rows: Vec<(String, Vec<String>)>,
    pub stats: TokenStats,
    pub per_image: usize,
}

impl Preview {
    pub fn load(ckpt: &Path, n: usize, device: &Device) -> Result<Preview> {
        let (model, _params, state) = crate::train::load_model(ckpt, device)?;
        let test = data::load(&state.config.data, Split::Test)?;
        let idx: Vec<usize> = (0..n.min(test.len())).collect();
        let size = state.config.model.image_size as u32;
        let images = data::batch::make_batch(&test, &idx, size, None, device)?;
        Ok(Preview {
            model,
            state,
            images,
            test,
        })
    }

    /// Each image's class and token text (at most `show` tokens), the usage statistics of the
    /// tokens over all of them, and the tokens per image.
    pub fn tokens(&self, show: usize) -> Result<PreviewTokens> {
        let ids: Vec<Vec<u32>> = self.model.encode(&self.images)?.to_vec2()?;
        let text = |t: u32| self.model.token_text(t).unwrap_or_else(|| t.to_string());
        let rows = ids
            .iter()
            .enumerate()
            .map(|(i, row)| {
                (
                    self.test.class_name(i).to_string(),
                    row.iter().take(show).map(|&t| text(t)).collect(),
                )
            })
            .collect();
        Ok(PreviewTokens {
            per_image: ids.first().map_or(0, Vec::len),
            stats: self.model.token_stats(&ids, 10),
            rows,
        })
    }

    /// The unmasked reconstruction's MSE, with a grid (originals above reconstructions)
    /// written to `out`.
    pub fn grid(&self, out: &Path) -> Result<f32> {
        let fwd = self.model.forward(&self.images, None)?;
        data::batch::write_grid(&[&self.images, &fwd.recon], 16, out)?;
        Ok(fwd.losses.recon.to_scalar::<f32>()?)
    }
}
