//! The frozen LM on the real all-MiniLM-L6-v2 weights against an independent numpy reference
//! (tests/data/minilm_golden.py wrote tests/data/minilm_golden.*).

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::{max_abs_diff, minilm_dir};
use lqae::lm::{Family, FrozenLm};

const TOL: f32 = 1e-4;

fn golden() -> (Vec<String>, std::collections::HashMap<String, Tensor>) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{dir}/minilm_golden.json")).unwrap(),
    )
    .unwrap();
    let sentences = meta["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    let t =
        candle_core::safetensors::load(format!("{dir}/minilm_golden.safetensors"), &Device::Cpu)
            .unwrap();
    (sentences, t)
}

fn load() -> FrozenLm {
    FrozenLm::load(&minilm_dir(), &Device::Cpu).unwrap()
}

#[test]
fn hidden_states_match_numpy_reference_for_ids_and_for_input_embeddings() {
    let lm = load();
    assert_eq!(lm.family(), Family::Bert);
    let (sentences, g) = golden();
    assert_eq!(sentences.len(), 3);
    for (i, s) in sentences.iter().enumerate() {
        let ids = lm.tokenize(s, true).unwrap();
        let want_ids: Vec<u32> = g[&format!("ids_{i}")]
            .to_dtype(DType::U32)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(ids, want_ids, "token ids of {s:?}");
        let want = &g[&format!("hidden_{i}")]; // (layers + 1, s, 384)
        let ids_t = Tensor::new(ids.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let states = lm.forward_ids(&ids_t, None).unwrap();
        assert_eq!(states.len(), 7, "embedding output + 6 layers");
        for (l, h) in states.iter().enumerate() {
            let d = max_abs_diff(&h.squeeze(0).unwrap(), &want.get(l).unwrap());
            assert!(
                d < TOL,
                "sentence {i}, hidden state {l}: max |diff| {d} >= {TOL}"
            );
        }
        // The same ids fed as input embeddings (the path LQAE uses) give the same states.
        let emb = lm
            .word_embeddings()
            .index_select(&ids_t.squeeze(0).unwrap(), 0)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let from_embeds = lm.forward_embeds(&emb, None).unwrap();
        for (l, (a, b)) in states.iter().zip(&from_embeds).enumerate() {
            let d = max_abs_diff(a, b);
            assert!(
                d < 1e-6,
                "sentence {i}, state {l}: ids vs embeddings differ by {d}"
            );
        }
    }
}

#[test]
fn padded_batch_with_attention_mask_matches_unpadded_reference() {
    let lm = load();
    let (sentences, g) = golden();
    let ids: Vec<Vec<u32>> = sentences
        .iter()
        .map(|s| lm.tokenize(s, true).unwrap())
        .collect();
    let len = ids.iter().map(Vec::len).max().unwrap();
    let pad = lm.vocab().special_ids.pad.unwrap();
    let mut flat = Vec::new();
    let mut mask = Vec::new();
    for row in &ids {
        for j in 0..len {
            flat.push(*row.get(j).unwrap_or(&pad));
            mask.push(u32::from(j < row.len()));
        }
    }
    let b = ids.len();
    let ids_t = Tensor::from_vec(flat, (b, len), &Device::Cpu).unwrap();
    let mask_t = Tensor::from_vec(mask, (b, len), &Device::Cpu).unwrap();
    let states = lm.forward_ids(&ids_t, Some(&mask_t)).unwrap();
    for (i, row) in ids.iter().enumerate() {
        let want = g[&format!("hidden_{i}")].get(6).unwrap();
        let got = states[6].get(i).unwrap().narrow(0, 0, row.len()).unwrap();
        let d = max_abs_diff(&got, &want);
        assert!(
            d < TOL,
            "sentence {i} in a padded batch: last layer max |diff| {d}"
        );
    }
}

#[test]
fn special_tokens_and_token_text() {
    let lm = load();
    let sp = &lm.vocab().special_ids;
    assert_eq!(
        (sp.mask, sp.pad, sp.cls, sp.sep, sp.unk),
        (103, Some(0), Some(101), Some(102), Some(100))
    );
    assert_eq!(lm.mask_id(), 103);
    assert_eq!(lm.word_embeddings().dims(), &[30522, 384]);
    assert!(lm.vocab().is_special(103) && !lm.vocab().is_special(2023));
    // WordPiece continuation pieces glue to the word before, exactly as the tokenizer decodes.
    let text = "unbelievably tokenised sneakers";
    let ids = lm.tokenize(text, false).unwrap();
    assert!(
        ids.iter().any(|&i| lm.vocab().piece(i).starts_with("##")),
        "expected sub-word pieces in {ids:?}"
    );
    assert_eq!(
        lm.vocab().decode(&ids),
        lm.tokenizer().decode(&ids, true).unwrap()
    );
    assert_eq!(lm.vocab().decode(&ids), text);
    let cont = ids
        .iter()
        .copied()
        .find(|&i| lm.vocab().piece(i).starts_with("##"))
        .unwrap();
    let t = lm.vocab().token_text(cont);
    assert!(!t.starts_word && !t.text.starts_with('#'), "{t:?}");
    // No silent 128-token padding or truncation from the packaged tokenizer.
    let long = "word ".repeat(300);
    assert_eq!(lm.tokenize(&long, false).unwrap().len(), 300);
}

#[test]
fn gradient_reaches_input_embeddings_and_matches_finite_difference() {
    let lm = load();
    let ids = Tensor::new(&[[101u32, 1037, 6302, 1997, 1037, 102]], &Device::Cpu).unwrap();
    let emb = lm.encoder().embeddings().lookup(&ids).unwrap();
    let x = Var::from_tensor(&emb).unwrap();
    let w = common::randn(&mut rand::SeedableRng::seed_from_u64(7), &[1, 6, 384], 1.0);
    let loss_of = |x: &Tensor| -> Tensor {
        (lm.forward_embeds(x, None).unwrap()[6].clone() * &w)
            .unwrap()
            .sum_all()
            .unwrap()
    };
    let grads = loss_of(x.as_tensor()).backward().unwrap();
    let g = grads
        .get(x.as_tensor())
        .expect("no gradient reached the input embeddings");
    let gn = g
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(gn > 1e-6, "gradient norm {gn}");
    // Nothing in the frozen LM is a variable: its weights get no gradient.
    assert!(grads.get(lm.word_embeddings()).is_none());
    let eps = 1e-2f32;
    common::check_gradient(
        &loss_of,
        &emb,
        g,
        &[(0, 1, 3), (0, 4, 200), (0, 5, 383)],
        eps,
        0.05,
        1.0,
    );
}
