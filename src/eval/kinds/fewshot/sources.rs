//! What a run reads before it asks anything: the test images, the episodes, the model, and
//! the tokens of every image the episodes show (the model's own, or a `tokens.file`'s).

use super::episodes::{self, read_episodes, sample_episodes, Episode};
use super::spec::{CheckedFewshot, Names};
use crate::data::{image_key, subset, LabelledImages, Split};
use crate::error::Result;
use crate::eval::suite_kind::Ctx;
use crate::eval::tokens_file::{self, Field, Precomputed};
use crate::eval::zoo::Trained;
use crate::model::Lqae;
use std::collections::HashMap;
use std::path::Path;

/// An image's tokens before selection: ids of the model's LM, or words.
pub enum RawTokens {
    Ids(Vec<u32>),
    Words(Vec<String>),
}

impl RawTokens {
    pub fn len(&self) -> usize {
        match self {
            RawTokens::Ids(v) => v.len(),
            RawTokens::Words(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Everything a run reads.
pub struct Inputs {
    pub set: LabelledImages,
    pub episodes: Vec<Episode>,
    pub trained: Trained,
    /// The tokens file read in place of the model's tokens, and which field.
    pub file: Option<(Precomputed, Field)>,
    /// Every image the episodes show, `(key, index in the test split)`, sorted by key.
    pub shown: Vec<(String, usize)>,
    /// The tokens of each shown image, by key.
    pub raw: HashMap<String, RawTokens>,
    /// Tokens per image before selection (the mean over the shown images).
    pub tokens_per_image: usize,
}

impl Inputs {
    pub fn load(spec: &CheckedFewshot, cx: &Ctx) -> Result<Inputs> {
        let set = spec.data.load(Split::Test)?;
        let episodes = episodes_of(spec, &set)?;
        let trained = cx.zoo.load_for(&spec.model, &spec.data, "model")?;
        let lqae = trained.lqae("model", ": few-shot prompts need language tokens")?;
        let file = spec
            .file
            .as_ref()
            .map(|f| {
                tokens_file::open(
                    &f.files,
                    f.field.map(Field::name),
                    &trained.state.config.model.lm_name(),
                    lqae.lm().vocab().len(),
                    cx.progress,
                    "",
                )
            })
            .transpose()?;
        let shown = shown_images(&set, &episodes);
        let size = trained.state.config.model.image_size as u32;
        let file_ref = file.as_ref().map(|(p, f)| (p, *f));
        let (raw, tokens_per_image) = raw_tokens_of(file_ref, lqae, size, &set, &shown, cx)?;
        Ok(Inputs {
            set,
            episodes,
            trained,
            file,
            shown,
            raw,
            tokens_per_image,
        })
    }

    pub fn lqae(&self) -> &Lqae {
        self.trained
            .lqae("model", ": few-shot prompts need language tokens")
            .expect("checked when loaded")
    }
}

/// The episodes of a run: replayed from `episodes.file`, or sampled from the test subset.
fn episodes_of(spec: &CheckedFewshot, set: &LabelledImages) -> Result<Vec<Episode>> {
    let e = &spec.episodes;
    let mut eps = match &e.file {
        Some(f) => read_episodes(Path::new(f), set)?,
        None => {
            let pool = subset(set.len(), spec.data.test_limit, e.seed, "fewshot-pool");
            sample_episodes(set, &pool, &e.ways, &e.columns, e.count, e.seed)?
        }
    };
    if e.names == Names::Nonsense {
        episodes::name_nonsense(&mut eps, e.seed)?;
    }
    Ok(eps)
}

/// Every image the episodes show, by key, with its data-set index.
fn shown_images(set: &LabelledImages, episodes: &[Episode]) -> Vec<(String, usize)> {
    let keys: HashMap<String, usize> = (0..set.len()).map(|i| (image_key(set, i), i)).collect();
    let mut needed: Vec<String> = episodes
        .iter()
        .flat_map(|e| {
            e.support
                .iter()
                .chain(std::iter::once(&e.query))
                .map(|s| s.image.clone())
        })
        .collect();
    needed.sort();
    needed.dedup();
    needed
        .into_iter()
        .map(|k| {
            let i = keys[&k];
            (k, i)
        })
        .collect()
}

/// The tokens of every image the episodes show (from the model, or from `tokens.file`), and
/// how many tokens an image has.
fn raw_tokens_of(
    file: Option<(&Precomputed, Field)>,
    lqae: &Lqae,
    size: u32,
    set: &LabelledImages,
    shown: &[(String, usize)],
    cx: &Ctx,
) -> Result<(HashMap<String, RawTokens>, usize)> {
    let mut raw = HashMap::new();
    let mut n_ids = 0usize;
    if let Some((file, field)) = file {
        let vocab = lqae.lm().vocab();
        for (k, i) in shown {
            let e = file.get(set, Split::Test, *i)?;
            let id = tokens_file::data_image_id(Split::Test, *i);
            let r = match field {
                Field::Ids => RawTokens::Ids(file.ids_of(e, &id, vocab.len())?.to_vec()),
                Field::Text => RawTokens::Words(file.text_of(e, &id)?.to_vec()),
            };
            n_ids += r.len();
            raw.insert(k.clone(), r);
        }
    } else {
        for chunk in shown.chunks(64) {
            let idx: Vec<usize> = chunk.iter().map(|x| x.1).collect();
            let batch = crate::data::batch::make_batch(set, &idx, size, None, cx.device)?;
            let ids: Vec<Vec<u32>> = lqae.encode(&batch)?.to_vec2()?;
            for ((k, _), row) in chunk.iter().zip(ids) {
                n_ids += row.len();
                raw.insert(k.clone(), RawTokens::Ids(row));
            }
        }
    }
    Ok((raw, n_ids / shown.len().max(1)))
}
