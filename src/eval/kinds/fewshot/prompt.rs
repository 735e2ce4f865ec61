//! Images as text and the prompt of an episode; reading the answer.

use super::episodes::{Episode, Shot};
use super::spec::{EpisodeSettings, Select, TokenSettings};
use std::collections::HashMap;

/// The token text of one image (ids in raster order) under `s`.
pub fn image_text(ids: &[u32], vocab: &crate::lm::Vocab, s: &TokenSettings) -> String {
    image_words(ids, vocab, s).join(&s.separator)
}

/// The tokens of one image (ids in raster order) that `s` writes, in the order written.
pub fn image_words(ids: &[u32], vocab: &crate::lm::Vocab, s: &TokenSettings) -> Vec<String> {
    let kept: Vec<(u32, String)> = ids
        .iter()
        .map(|&id| (id, vocab.token_text(id)))
        .filter(|(_, t)| (s.keep_special || !t.special) && (s.keep_subword || t.starts_word))
        .filter(|(_, t)| !t.text.trim().is_empty())
        .map(|(id, t)| (id, t.text.trim().to_string()))
        .collect();
    pick(&kept, s)
}

/// The text of one image given as words (a `tokens.file`'s `text`), in raster order, under
/// `s`: the words are the tokens (no vocabulary: nothing is special or a word piece).
pub fn words_text(words: &[String], s: &TokenSettings) -> String {
    text_words(words, s).join(&s.separator)
}

/// The words of one image (a `tokens.file`'s `text`) that `s` writes.
pub fn text_words(words: &[String], s: &TokenSettings) -> Vec<String> {
    let kept: Vec<(&str, String)> = words
        .iter()
        .map(|w| w.trim())
        .filter(|w| !w.is_empty())
        .map(|w| (w, w.to_string()))
        .collect();
    pick(&kept, s)
}

/// `tokens.per_image` of the kept `(key, text)` tokens as `tokens.select` picks them.
fn pick<K: std::hash::Hash + Eq + Copy>(kept: &[(K, String)], s: &TokenSettings) -> Vec<String> {
    let m = kept.len();
    let select = s.select();
    let n = if select == Select::All {
        m
    } else {
        s.per_image().min(m)
    };
    let chosen: Vec<&str> = match select {
        Select::Raster => kept[..n].iter().map(|x| x.1.as_str()).collect(),
        Select::Stride => (0..n).map(|i| kept[i * m / n.max(1)].1.as_str()).collect(),
        Select::Frequent => {
            let mut count: HashMap<K, (usize, usize)> = HashMap::new();
            for (pos, (id, _)) in kept.iter().enumerate() {
                count.entry(*id).or_insert((0, pos)).0 += 1;
            }
            let mut ranked: Vec<(usize, usize)> = count.into_values().collect();
            ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            ranked
                .iter()
                .take(n)
                .map(|&(_, p)| kept[p].1.as_str())
                .collect()
        }
        Select::All => kept.iter().map(|x| x.1.as_str()).collect(),
    };
    chosen.into_iter().map(String::from).collect()
}

/// `"a" or "b"`, `"a", "b" or "c"`.
pub fn label_list(labels: &[String]) -> String {
    let q: Vec<String> = labels.iter().map(|l| format!("\"{l}\"")).collect();
    match q.len() {
        0 => String::new(),
        1 => q[0].clone(),
        n => format!("{} or {}", q[..n - 1].join(", "), q[n - 1]),
    }
}

/// The prompt of an episode, ending where the query's label would start.
pub fn prompt(ep: &Episode, texts: &HashMap<String, String>, e: &EpisodeSettings) -> String {
    let mut p = String::new();
    if ep.induction {
        p.push_str(
            &e.induction_template
                .replace("{labels}", &label_list(&ep.classes)),
        );
    }
    let example = |s: &Shot| {
        e.example_template
            .replace("{image}", &texts[&s.image])
            .replace("{label}", &s.label)
    };
    for _ in 0..=ep.repeats {
        for s in &ep.support {
            p.push_str(&example(s));
        }
    }
    let cut = e
        .example_template
        .find("{label}")
        .unwrap_or(e.example_template.len());
    let query = e.example_template[..cut].replace("{image}", &texts[&ep.query.image]);
    p.push_str(query.trim_end());
    p
}

/// Lower-case, inner whitespace collapsed, surrounding spaces and final punctuation removed.
pub fn normalize(s: &str) -> String {
    let first = s.trim_start().lines().next().unwrap_or("");
    let t: Vec<&str> = first.split_whitespace().collect();
    t.join(" ")
        .trim_end_matches(['.', ',', ';', ':', '!', '?'])
        .trim()
        .to_lowercase()
}

/// Exact match of a generated answer against the class names.
pub fn match_answer(answer: &str, classes: &[String]) -> Option<usize> {
    let a = normalize(answer);
    classes.iter().position(|c| normalize(c) == a)
}

/// `first-token`: the most likely first tokens, best first; the first one that begins exactly
/// one class name (or is that name followed by more text) decides. Tokens that fit several
/// names are passed over.
pub fn first_token_pick(top: &[(String, f64)], classes: &[String]) -> Option<usize> {
    let names: Vec<String> = classes.iter().map(|c| c.to_lowercase()).collect();
    for (tok, _) in top {
        let t = tok
            .trim_start_matches(['Ġ', '▁'])
            .trim_start()
            .to_lowercase();
        if t.is_empty() {
            continue;
        }
        let fits: Vec<usize> = names
            .iter()
            .enumerate()
            .filter(|(_, n)| n.starts_with(&t) || t.starts_with(n.as_str()))
            .map(|(i, _)| i)
            .collect();
        if fits.len() == 1 {
            return Some(fits[0]);
        }
    }
    None
}
