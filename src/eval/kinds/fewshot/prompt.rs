//! Images as text, and the prompt of an episode.

use super::episodes::{Episode, Shot};
use super::spec::{Point, Select, Templates, TextRule};
use std::collections::HashMap;

/// The token text of one image (ids in raster order) at point `p`.
pub fn image_text(ids: &[u32], vocab: &crate::lm::Vocab, p: &Point, r: &TextRule) -> String {
    image_words(ids, vocab, p, r).join(&r.separator)
}

/// The tokens of one image (ids in raster order) that point `p` writes, in the order written.
pub fn image_words(ids: &[u32], vocab: &crate::lm::Vocab, p: &Point, r: &TextRule) -> Vec<String> {
    let kept: Vec<(u32, String)> = ids
        .iter()
        .map(|&id| (id, vocab.token_text(id)))
        .filter(|(_, t)| (r.keep_special || !t.special) && (r.keep_subword || t.starts_word))
        .filter(|(_, t)| !t.text.trim().is_empty())
        .map(|(id, t)| (id, t.text.trim().to_string()))
        .collect();
    pick(&kept, p)
}

/// The words of one image given as words (a `tokens.file`'s `text`, a calibration
/// tokenizer's), in raster order, that point `p` writes: the words are the tokens (no
/// vocabulary: nothing is special or a word piece).
pub fn text_words(words: &[String], p: &Point) -> Vec<String> {
    let kept: Vec<(&str, String)> = words
        .iter()
        .map(|w| w.trim())
        .filter(|w| !w.is_empty())
        .map(|w| (w, w.to_string()))
        .collect();
    pick(&kept, p)
}

/// `per_image` of the kept `(key, text)` tokens as `select` picks them.
fn pick<K: std::hash::Hash + Eq + Copy>(kept: &[(K, String)], p: &Point) -> Vec<String> {
    let m = kept.len();
    let select = p.select;
    let n = if select == Select::All {
        m
    } else {
        p.per_image.min(m)
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
pub fn prompt(ep: &Episode, texts: &HashMap<String, String>, t: &Templates) -> String {
    let mut p = String::new();
    if ep.induction {
        p.push_str(&t.induction.replace("{labels}", &label_list(&ep.classes)));
    }
    let example = |s: &Shot| {
        t.example
            .replace("{image}", &texts[&s.image])
            .replace("{label}", &s.label)
    };
    for _ in 0..=ep.repeats {
        for s in &ep.support {
            p.push_str(&example(s));
        }
    }
    let cut = t.example.find("{label}").unwrap_or(t.example.len());
    let query = t.example[..cut].replace("{image}", &texts[&ep.query.image]);
    p.push_str(query.trim_end());
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_lists_read_naturally() {
        let l = |v: &[&str]| label_list(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(l(&["lion", "vase"]), "\"lion\" or \"vase\"");
        assert_eq!(l(&["a", "b", "c"]), "\"a\", \"b\" or \"c\"");
    }
}
