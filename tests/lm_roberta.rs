//! A RoBERTa-layout checkpoint (tiny, random, written by the test with the real tensor names,
//! `roberta.` prefix, byte-level BPE tokenizer) loads, runs, and offsets positions by
//! pad_token_id + 1 = 2.

mod common;

use candle_core::{Device, Tensor, Var};
use common::{max_abs_diff, TinyRoberta, TINY_HIDDEN, TINY_MAX_TOKENS, TINY_VOCAB};
use lqae::lm::{Family, FrozenLm};

fn setup() -> (tempfile::TempDir, TinyRoberta, FrozenLm) {
    let dir = tempfile::tempdir().unwrap();
    let tiny = TinyRoberta::new(11);
    tiny.write(dir.path());
    let lm = FrozenLm::load(dir.path(), &Device::Cpu).unwrap();
    (dir, tiny, lm)
}

/// LayerNorm over the last axis written out with plain f32 loops, independent of the crate.
fn layer_norm_rows(x: &[Vec<f32>], w: &[f32], b: &[f32], eps: f32) -> Vec<Vec<f32>> {
    x.iter()
        .map(|r| {
            let n = r.len() as f32;
            let mu = r.iter().sum::<f32>() / n;
            let var = r.iter().map(|v| (v - mu) * (v - mu)).sum::<f32>() / n;
            r.iter()
                .enumerate()
                .map(|(i, v)| (v - mu) / (var + eps).sqrt() * w[i] + b[i])
                .collect()
        })
        .collect()
}

#[test]
fn loads_with_roberta_specials_and_offset() {
    let (_d, _tiny, lm) = setup();
    assert_eq!(lm.family(), Family::Roberta);
    assert_eq!(lm.config().position_offset(), 2);
    assert_eq!(lm.config().max_tokens(), TINY_MAX_TOKENS);
    let sp = &lm.vocab().special_ids;
    assert_eq!(
        (sp.mask, sp.pad, sp.cls, sp.sep, sp.unk),
        (263, Some(1), Some(0), Some(2), Some(3))
    );
    assert_eq!(lm.word_embeddings().dims(), &[TINY_VOCAB, TINY_HIDDEN]);
}

#[test]
fn embedding_output_uses_positions_from_two() {
    let (_d, tiny, lm) = setup();
    let s = TINY_MAX_TOKENS; // every position the table allows: 2..18
    let ids: Vec<u32> = (0..s as u32).map(|i| 4 + (i * 37) % 256).collect();
    let ids_t = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let states = lm.forward_ids(&ids_t, None).unwrap();
    assert_eq!(states.len(), 3);

    let word: Vec<Vec<f32>> = tiny
        .tensor("embeddings.word_embeddings.weight")
        .to_vec2()
        .unwrap();
    let pos: Vec<Vec<f32>> = tiny
        .tensor("embeddings.position_embeddings.weight")
        .to_vec2()
        .unwrap();
    let ty: Vec<Vec<f32>> = tiny
        .tensor("embeddings.token_type_embeddings.weight")
        .to_vec2()
        .unwrap();
    let w: Vec<f32> = tiny
        .tensor("embeddings.LayerNorm.weight")
        .to_vec1()
        .unwrap();
    let b: Vec<f32> = tiny.tensor("embeddings.LayerNorm.bias").to_vec1().unwrap();
    let expect_with_offset = |off: usize| {
        let rows: Vec<Vec<f32>> = ids
            .iter()
            .enumerate()
            .map(|(j, &id)| {
                (0..TINY_HIDDEN)
                    .map(|k| word[id as usize][k] + pos[off + j][k] + ty[0][k])
                    .collect()
            })
            .collect();
        Tensor::new(layer_norm_rows(&rows, &w, &b, 1e-5), &Device::Cpu).unwrap()
    };
    let got = states[0].squeeze(0).unwrap();
    let d2 = max_abs_diff(&got, &expect_with_offset(2));
    assert!(
        d2 < 1e-5,
        "embedding output differs from word + pos[2..] + type, LN: {d2}"
    );
    let d0 = max_abs_diff(&got, &expect_with_offset(0));
    assert!(d0 > 1e-2, "offset 0 must give a different result ({d0})");

    // Ids and the same rows fed as input embeddings agree at every layer.
    let emb = lm.encoder().embeddings().lookup(&ids_t).unwrap();
    for (a, b) in states.iter().zip(lm.forward_embeds(&emb, None).unwrap()) {
        assert!(max_abs_diff(a, &b) < 1e-6);
    }
    // One token more than the position table allows is refused, not wrapped around.
    let too_long = Tensor::zeros(
        (1, s + 1, TINY_HIDDEN),
        candle_core::DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let e = lm.forward_embeds(&too_long, None).unwrap_err().to_string();
    assert!(e.contains("longer than the model allows"), "{e}");
}

#[test]
fn byte_level_token_text() {
    let (_d, _tiny, lm) = setup();
    let ids = lm.tokenize("hi the", false).unwrap();
    // "h" "i" are single bytes; " the" is one merged piece "Ġthe".
    assert_eq!(ids, vec![4 + b'h' as u32, 4 + b'i' as u32, 262]);
    let v = lm.vocab();
    let the = v.token_text(262);
    assert_eq!(
        (the.text.as_str(), the.starts_word, the.special),
        ("the", true, false)
    );
    assert!(!v.token_text(4 + b'i' as u32).starts_word);
    assert_eq!(v.decode(&ids), "hi the");
    assert!(v.token_text(263).special);
    assert_eq!(
        lm.tokenize("hi", true).unwrap(),
        vec![0, 4 + b'h' as u32, 4 + b'i' as u32, 2]
    );
}

#[test]
fn gradient_through_roberta_matches_finite_difference() {
    let (_d, _tiny, lm) = setup();
    let mut rng: rand::rngs::StdRng = rand::SeedableRng::seed_from_u64(3);
    let x0 = common::randn(&mut rng, &[2, 5, TINY_HIDDEN], 1.0);
    let w = common::randn(&mut rng, &[2, 5, TINY_HIDDEN], 1.0);
    let mask = Tensor::new(&[[1u32, 1, 1, 1, 1], [1, 1, 1, 0, 0]], &Device::Cpu).unwrap();
    let loss_of = |x: &Tensor| {
        let h = lm.forward_embeds(x, Some(&mask)).unwrap().pop().unwrap();
        (h * &w).unwrap().sum_all().unwrap()
    };
    let x = Var::from_tensor(&x0).unwrap();
    let g = loss_of(x.as_tensor())
        .backward()
        .unwrap()
        .remove(x.as_tensor())
        .unwrap();
    // Masked-out key positions of row 1 only influence themselves (as queries); a padded
    // position's input must not change row 1's real tokens: check via finite differences.
    let eps = 1e-2f32;
    common::check_gradient(
        &loss_of,
        &x0,
        &g,
        &[(0, 0, 0), (0, 4, 31), (1, 2, 7), (1, 4, 5)],
        eps,
        0.03,
        1.0,
    );
    // Padding is invisible to real tokens: perturbing a padded position leaves row 1's real
    // outputs unchanged.
    let h = lm.forward_embeds(&x0, Some(&mask)).unwrap().pop().unwrap();
    let mut bump = vec![0f32; 2 * 5 * TINY_HIDDEN];
    for d in 0..TINY_HIDDEN {
        bump[(5 + 4) * TINY_HIDDEN + d] = 3.0;
    }
    let bump = Tensor::from_vec(bump, (2, 5, TINY_HIDDEN), &Device::Cpu).unwrap();
    let h2 = lm
        .forward_embeds(&(&x0 + bump).unwrap(), Some(&mask))
        .unwrap()
        .pop()
        .unwrap();
    let real = |h: &Tensor| h.get(1).unwrap().narrow(0, 0, 3).unwrap();
    assert!(max_abs_diff(&real(&h), &real(&h2)) < 1e-5);
}
