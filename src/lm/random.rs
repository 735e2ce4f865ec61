//! Language models of a real checkpoint's shape with seeded random weights: for timing and for
//! device comparisons where the real weights are not on disk (the GPU machines fetch nothing,
//! and roberta-base is not among the assets these machines can fetch). The numbers such a
//! model gives mean nothing; its shapes, and so its cost, are the real model's.
//!
//! [`random_encoder`] builds one in memory; [`write_checkpoint`] writes one as a Hugging Face
//! folder (`config.json`, `model.safetensors`, a word-level `tokenizer.json` with the family's
//! special tokens) that [`super::FrozenLm::load`] and the PyTorch peer read like a real one.

use super::{Family, LmConfig};
use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// The MiniLM-L6 shape (`config.json` of all-MiniLM-L6-v2).
pub fn minilm_shape() -> LmConfig {
    serde_json::from_str(
        r#"{"model_type": "bert", "vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6,
            "num_attention_heads": 12, "intermediate_size": 1536, "hidden_act": "gelu",
            "max_position_embeddings": 512, "type_vocab_size": 2, "layer_norm_eps": 1e-12}"#,
    )
    .expect("a valid LmConfig")
}

/// The RoBERTa-base shape (`config.json` of roberta-base): the paper's frozen LM.
pub fn roberta_base_shape() -> LmConfig {
    serde_json::from_str(
        r#"{"model_type": "roberta", "vocab_size": 50265, "hidden_size": 768, "num_hidden_layers": 12,
            "num_attention_heads": 12, "intermediate_size": 3072, "hidden_act": "gelu",
            "max_position_embeddings": 514, "type_vocab_size": 1, "layer_norm_eps": 1e-05,
            "pad_token_id": 1}"#,
    )
    .expect("a valid LmConfig")
}

/// A named shape: `minilm` or `roberta-base`.
pub fn shape(name: &str) -> Result<LmConfig> {
    match name {
        "minilm" => Ok(minilm_shape()),
        "roberta-base" => Ok(roberta_base_shape()),
        other => Err(Error::setting(
            "--shape",
            format!("`{other}` is not a known LM shape; use minilm or roberta-base"),
        )),
    }
}

/// `cfg` with `key=value` overrides of its `config.json` fields (numbers or strings), checked
/// as a real `config.json` is.
pub fn with_overrides(cfg: &LmConfig, sets: &[String]) -> Result<LmConfig> {
    let mut v = serde_json::to_value(cfg).map_err(|e| Error::Msg(e.to_string()))?;
    for s in sets {
        let (k, val) = s.split_once('=').ok_or_else(|| {
            Error::setting(
                "--set",
                format!("`{s}` is not key=value (e.g. num_hidden_layers=2)"),
            )
        })?;
        let obj = v.as_object_mut().expect("an object");
        if !obj.contains_key(k) {
            return Err(Error::setting(
                "--set",
                format!(
                    "`{k}` is not a config.json field; fields: {}",
                    obj.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        let parsed = serde_json::from_str(val).unwrap_or_else(|_| serde_json::json!(val));
        obj.insert(k.to_string(), parsed);
    }
    let out: LmConfig = serde_json::from_value(v)
        .map_err(|e| Error::setting("--set", format!("not a valid LM config: {e}")))?;
    out.validate(Path::new("--set"))?;
    Ok(out)
}

/// Names and shapes of a BERT encoder's tensors (Hugging Face names, no `bert.` prefix).
fn encoder_shapes(cfg: &LmConfig) -> Vec<(String, Vec<usize>)> {
    let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
    let mut shapes: Vec<(String, Vec<usize>)> = vec![
        (
            "embeddings.word_embeddings.weight".into(),
            vec![cfg.vocab_size, h],
        ),
        (
            "embeddings.position_embeddings.weight".into(),
            vec![cfg.max_position_embeddings, h],
        ),
        (
            "embeddings.token_type_embeddings.weight".into(),
            vec![cfg.type_vocab_size, h],
        ),
        ("embeddings.LayerNorm.weight".into(), vec![h]),
        ("embeddings.LayerNorm.bias".into(), vec![h]),
    ];
    for l in 0..cfg.num_hidden_layers {
        let p = format!("encoder.layer.{l}.");
        for (name, out, inp) in [
            ("attention.self.query", h, h),
            ("attention.self.key", h, h),
            ("attention.self.value", h, h),
            ("attention.output.dense", h, h),
            ("intermediate.dense", i, h),
            ("output.dense", h, i),
        ] {
            shapes.push((format!("{p}{name}.weight"), vec![out, inp]));
            shapes.push((format!("{p}{name}.bias"), vec![out]));
        }
        for ln in ["attention.output.LayerNorm", "output.LayerNorm"] {
            shapes.push((format!("{p}{ln}.weight"), vec![h]));
            shapes.push((format!("{p}{ln}.bias"), vec![h]));
        }
    }
    shapes
}

/// Seeded random weights of the shape `cfg`, on the CPU: weights uniform in +-0.05, biases
/// +-0.01, LayerNorm scales 1 +- 0.05.
pub fn random_weights(cfg: &LmConfig, seed: u64) -> Result<HashMap<String, Tensor>> {
    let mut ts = HashMap::new();
    for (k, (name, shape)) in encoder_shapes(cfg).into_iter().enumerate() {
        let u = crate::rng::uniform_tensor(
            &shape,
            seed.wrapping_mul(1000).wrapping_add(k as u64),
            &Device::Cpu,
        )?;
        let t = if name.ends_with("LayerNorm.weight") {
            (u * 0.1)?.affine(1.0, 1.0)?
        } else if name.ends_with(".bias") {
            (u * 0.02)?
        } else {
            (u * 0.1)?
        };
        ts.insert(name, t);
    }
    Ok(ts)
}

/// A BERT encoder of the shape `cfg` with [`random_weights`], on `device`.
pub fn random_encoder(cfg: &LmConfig, seed: u64, device: &Device) -> Result<super::Encoder> {
    let ts = random_weights(cfg, seed)?
        .into_iter()
        .map(|(n, t)| Ok((n, t.to_device(device)?)))
        .collect::<Result<HashMap<_, _>>>()?;
    let vb = candle_nn::VarBuilder::from_tensors(ts, DType::F32, device);
    super::Encoder::new(cfg, vb).map_err(|e| Error::Msg(format!("random encoder: {e}")))
}

/// The word-level vocabulary of a random checkpoint: the family's special tokens at the ids the
/// real tokenizer gives them (RoBERTa: `<s> <pad> </s> <unk>` 0-3 and `<mask>` last; BERT:
/// `[PAD]` 0, `[UNK] [CLS] [SEP] [MASK]` 100-103), every other id a placeholder word
/// (`Ġw<id>` for RoBERTa's byte-level style, `w<id>` for BERT).
pub fn vocabulary(family: Family, size: usize) -> Result<(Vec<String>, Vec<u32>)> {
    let specials: Vec<(usize, &str)> = match family {
        Family::Roberta => vec![
            (0, "<s>"),
            (1, "<pad>"),
            (2, "</s>"),
            (3, "<unk>"),
            (size.saturating_sub(1), "<mask>"),
        ],
        Family::Bert => vec![
            (0, "[PAD]"),
            (100, "[UNK]"),
            (101, "[CLS]"),
            (102, "[SEP]"),
            (103, "[MASK]"),
        ],
    };
    let need = specials.iter().map(|s| s.0).max().unwrap_or(0) + 1;
    if size < need.max(5) {
        return Err(Error::setting(
            "vocab_size",
            format!(
                "{size} is too small for the special tokens of this family (at least {})",
                need.max(5)
            ),
        ));
    }
    let mut words: Vec<String> = (0..size)
        .map(|i| match family {
            Family::Roberta => format!("Ġw{i}"),
            Family::Bert => format!("w{i}"),
        })
        .collect();
    for (id, s) in &specials {
        words[*id] = s.to_string();
    }
    Ok((words, specials.iter().map(|s| s.0 as u32).collect()))
}

/// A word-level `tokenizer.json` over [`vocabulary`] (words split at white space), special
/// tokens marked as such, and the family's post-processor adding them around text.
fn tokenizer_json(cfg: &LmConfig) -> Result<String> {
    use tokenizers::models::wordlevel::WordLevel;
    use tokenizers::{AddedToken, Tokenizer};
    let (words, special) = vocabulary(cfg.family(), cfg.vocab_size)?;
    let unk = match cfg.family() {
        Family::Roberta => "<unk>",
        Family::Bert => "[UNK]",
    };
    let map: HashMap<String, u32> = words
        .iter()
        .enumerate()
        .map(|(i, w)| (w.clone(), i as u32))
        .collect();
    let model = WordLevel::builder()
        .vocab(map.into_iter().collect())
        .unk_token(unk.into())
        .build()
        .map_err(|e| Error::Msg(format!("word-level tokenizer: {e}")))?;
    let mut tok = Tokenizer::new(model);
    tok.with_pre_tokenizer(Some(tokenizers::pre_tokenizers::whitespace::Whitespace {}));
    let added: Vec<AddedToken> = special
        .iter()
        .map(|&id| AddedToken::from(words[id as usize].clone(), true))
        .collect();
    // `<s> ... </s>` / `[CLS] ... [SEP]` around encoded text, as the real tokenizers do.
    let (cls, sep) = match cfg.family() {
        Family::Roberta => ((words[0].clone(), 0), (words[2].clone(), 2)),
        Family::Bert => ((words[101].clone(), 101), (words[102].clone(), 102)),
    };
    match cfg.family() {
        Family::Roberta => {
            tok.with_post_processor(Some(
                tokenizers::processors::roberta::RobertaProcessing::new(sep, cls),
            ));
        }
        Family::Bert => {
            tok.with_post_processor(Some(tokenizers::processors::bert::BertProcessing::new(
                sep, cls,
            )));
        }
    }
    tok.add_special_tokens(added)
        .map_err(|e| Error::Msg(format!("tokenizer special tokens: {e}")))?;
    tok.to_string(false)
        .map_err(|e| Error::Msg(format!("writing tokenizer.json: {e}")))
}

/// Write a checkpoint folder of the shape `cfg` with [`random_weights`] (tensor names with
/// the family's `bert.`/`roberta.` prefix, as Hugging Face writes them). Each file is written
/// atomically, `config.json` last, so a folder with a `config.json` is complete.
pub fn write_checkpoint(dir: &Path, cfg: &LmConfig, seed: u64) -> Result<()> {
    cfg.validate(Path::new("config.json"))?;
    std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, format!("cannot create: {e}")))?;
    let tokenizer = tokenizer_json(cfg)?;
    crate::util::fsx::write_atomic(&dir.join("tokenizer.json"), tokenizer.as_bytes())?;
    let prefix = match cfg.family() {
        Family::Roberta => "roberta.",
        Family::Bert => "bert.",
    };
    let weights: HashMap<String, Tensor> = random_weights(cfg, seed)?
        .into_iter()
        .map(|(n, t)| (format!("{prefix}{n}"), t))
        .collect();
    let file = dir.join("model.safetensors");
    let tmp = dir.join(format!(".model.safetensors.tmp-{}", std::process::id()));
    candle_core::safetensors::save(&weights, &tmp)
        .map_err(|e| Error::file(&tmp, format!("cannot write: {e}")))?;
    std::fs::rename(&tmp, &file).map_err(|e| Error::file(&file, format!("cannot write: {e}")))?;
    // config.json as Hugging Face writes it: no null fields.
    let mut v = serde_json::to_value(cfg).map_err(|e| Error::Msg(e.to_string()))?;
    v.as_object_mut()
        .expect("an object")
        .retain(|_, x| !x.is_null());
    crate::util::fsx::write_atomic(
        &dir.join("config.json"),
        serde_json::to_string_pretty(&v)
            .map_err(|e| Error::Msg(e.to_string()))?
            .as_bytes(),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specials_sit_where_the_real_tokenizers_put_them() {
        let (w, s) = vocabulary(Family::Roberta, 50265).unwrap();
        assert_eq!(
            (w[0].as_str(), w[1].as_str(), w[50264].as_str()),
            ("<s>", "<pad>", "<mask>")
        );
        assert_eq!(s.len(), 5);
        let (w, _) = vocabulary(Family::Bert, 30522).unwrap();
        assert_eq!(
            (w[0].as_str(), w[103].as_str(), w[104].as_str()),
            ("[PAD]", "[MASK]", "w104")
        );
        assert!(vocabulary(Family::Bert, 50).is_err());
    }

    #[test]
    fn overrides_are_checked() {
        let c = with_overrides(&roberta_base_shape(), &["num_hidden_layers=2".into()]).unwrap();
        assert_eq!(c.num_hidden_layers, 2);
        assert!(with_overrides(&roberta_base_shape(), &["layers=2".into()]).is_err());
        assert!(with_overrides(&roberta_base_shape(), &["num_attention_heads=7".into()]).is_err());
    }
}
