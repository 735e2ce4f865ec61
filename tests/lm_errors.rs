//! Bad checkpoints give errors that name the file or tensor and what was expected.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{TinyRoberta, TINY_HIDDEN, TINY_VOCAB};
use lqae::lm::FrozenLm;

fn load_err(
    tiny: &TinyRoberta,
    edit: impl FnOnce(&std::path::Path),
) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    tiny.write(dir.path());
    edit(dir.path());
    let msg = match FrozenLm::load(dir.path(), &Device::Cpu) {
        Ok(_) => panic!("a broken checkpoint loaded"),
        Err(e) => e.to_string(),
    };
    (dir, msg)
}

#[test]
fn missing_files_are_named() {
    let tiny = TinyRoberta::new(1);
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        let (dir, e) = load_err(&tiny, |d| std::fs::remove_file(d.join(f)).unwrap());
        assert!(
            e.contains(&dir.path().join(f).display().to_string()) && e.contains("missing"),
            "{f}: {e}"
        );
    }
    let e = FrozenLm::load(
        std::path::Path::new("/nonexistent/lqae-model"),
        &Device::Cpu,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains("/nonexistent/lqae-model") && e.contains("not found"),
        "{e}"
    );
}

#[test]
fn wrong_tensor_shape_names_tensor_and_expected_shape() {
    let mut tiny = TinyRoberta::new(2);
    tiny.tensors.insert(
        "roberta.encoder.layer.1.intermediate.dense.weight".into(),
        Tensor::zeros((65, TINY_HIDDEN), DType::F32, &Device::Cpu).unwrap(),
    );
    let (_d, e) = load_err(&tiny, |_| {});
    eprintln!("{e}");
    assert!(e.contains("model.safetensors"), "{e}");
    assert!(
        e.contains("roberta.encoder.layer.1.intermediate.dense.weight"),
        "{e}"
    );
    assert!(
        e.contains("[64, 32]") && e.contains("[65, 32]"),
        "expected and found shapes: {e}"
    );
}

#[test]
fn missing_tensor_is_named() {
    let mut tiny = TinyRoberta::new(3);
    tiny.tensors
        .remove("roberta.encoder.layer.0.attention.self.key.bias");
    let (_d, e) = load_err(&tiny, |_| {});
    assert!(
        e.contains("roberta.encoder.layer.0.attention.self.key.bias"),
        "{e}"
    );
}

#[test]
fn unknown_model_type_is_refused_with_the_supported_list() {
    let mut tiny = TinyRoberta::new(4);
    tiny.config["model_type"] = "gpt2".into();
    let (_d, e) = load_err(&tiny, |_| {});
    assert!(
        e.contains("config.json") && e.contains("model_type `gpt2`") && e.contains("bert, roberta"),
        "{e}"
    );
}

#[test]
fn tokenizer_and_vocab_size_mismatch() {
    let mut tiny = TinyRoberta::new(5);
    tiny.config["vocab_size"] = 300.into();
    tiny.tensors.insert(
        "roberta.embeddings.word_embeddings.weight".into(),
        Tensor::zeros((300, TINY_HIDDEN), DType::F32, &Device::Cpu).unwrap(),
    );
    let (_d, e) = load_err(&tiny, |_| {});
    assert!(
        e.contains("tokenizer.json")
            && e.contains(&format!("{TINY_VOCAB} tokens"))
            && e.contains("vocab_size = 300"),
        "{e}"
    );
}

#[test]
fn malformed_json_is_named() {
    let tiny = TinyRoberta::new(6);
    let (_d, e) = load_err(&tiny, |d| {
        std::fs::write(d.join("config.json"), "{ not json").unwrap()
    });
    assert!(
        e.contains("config.json") && e.contains("not a valid"),
        "{e}"
    );
    let (_d, e) = load_err(&tiny, |d| {
        std::fs::write(d.join("tokenizer.json"), "[]").unwrap()
    });
    assert!(
        e.contains("tokenizer.json") && e.contains("not a valid tokenizer"),
        "{e}"
    );
}
