//! The no-LLM reference of a row: bag-of-tokens nearest support on exactly the episodes the
//! judge sees. Each image is the counts of the words written for it (the same words as in the
//! prompt); the query takes the label of the support image with the highest cosine similarity;
//! ties go to the support shown first in the prompt (the support order is shuffled per
//! episode, so the rule favours no class). It measures how much class signal the written token
//! text carries for that episode design, which a judge can use or waste.

use super::episodes::Episode;
use super::task::Row;
use std::collections::HashMap;

/// The rule, as results record it.
pub const RULE: &str = "nearest support: cosine similarity of word-count vectors of the words written (the prompt's), the query takes the label of the most similar support image; ties (including all-zero similarity) go to the support shown first in the prompt";

fn counts(words: &[String]) -> HashMap<&str, f64> {
    let mut c = HashMap::new();
    for w in words {
        *c.entry(w.as_str()).or_insert(0.0) += 1.0;
    }
    c
}

fn cosine(a: &HashMap<&str, f64>, b: &HashMap<&str, f64>) -> f64 {
    let dot: f64 = a.iter().map(|(k, x)| x * b.get(k).unwrap_or(&0.0)).sum();
    let na = a.values().map(|x| x * x).sum::<f64>().sqrt();
    let nb = b.values().map(|x| x * x).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}

/// The label the nearest support gives the query of `e`, under the row's words.
pub fn predict(e: &Episode, words: &HashMap<String, Vec<String>>) -> String {
    let empty = Vec::new();
    let bag = |image: &str| counts(words.get(image).unwrap_or(&empty));
    let q = bag(&e.query.image);
    nearest_by(e, |support| cosine(&q, &bag(support)))
}

/// The label of the support most similar to the query (`similarity` of a support image's key);
/// ties go to the support shown first in the prompt. The rule every nearest support here uses,
/// whatever the similarity.
pub fn nearest_by(e: &Episode, similarity: impl Fn(&str) -> f64) -> String {
    let mut best: Option<(f64, &str)> = None;
    for s in &e.support {
        let sim = similarity(&s.image);
        // Strictly greater: the first of equals (in prompt order) stays.
        if best.is_none_or(|(b, _)| sim > b) {
            best = Some((sim, &s.label));
        }
    }
    best.map(|b| b.1.to_string()).unwrap_or_default()
}

/// Per episode of the row: whether the nearest support is right.
pub fn correct(episodes: &[Episode], row: &Row) -> Vec<bool> {
    episodes
        .iter()
        .map(|e| predict(e, &row.words) == e.query.label)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::kinds::fewshot::episodes::Shot;

    fn ep(support: &[(&str, &str)], query: (&str, &str)) -> Episode {
        let shot = |(i, l): (&str, &str)| Shot {
            image: i.into(),
            label: l.into(),
        };
        Episode {
            ways: 2,
            induction: false,
            shots: 1,
            repeats: 0,
            index: 0,
            classes: vec!["a".into(), "b".into()],
            support: support.iter().copied().map(shot).collect(),
            query: shot(query),
            names: None,
        }
    }

    fn words(v: &[(&str, &str)]) -> HashMap<String, Vec<String>> {
        v.iter()
            .map(|(k, t)| (k.to_string(), t.split(' ').map(String::from).collect()))
            .collect()
    }

    #[test]
    fn the_most_similar_support_names_the_query_and_ties_go_first() {
        let e = ep(&[("s1", "a"), ("s2", "b")], ("q", "b"));
        // cos(q, s1) = 1/sqrt(2)/sqrt(1)... by hand: q = {x:1, y:1}, s1 = {x:2} -> 2/(sqrt2*2)
        // = 0.707; s2 = {y:1, z:1} -> 1/(sqrt2*sqrt2) = 0.5. s1 wins.
        let w = words(&[("q", "x y"), ("s1", "x x"), ("s2", "y z")]);
        assert_eq!(predict(&e, &w), "a");
        assert!((cosine(&counts(&w["q"]), &counts(&w["s1"])) - 0.5f64.sqrt()).abs() < 1e-12);
        // Counts matter: q = {y:3, x:1}; s2 = {y:1, z:1} -> 3/(sqrt10*sqrt2) = 0.671 beats
        // s1 = {x:2} -> 1/sqrt10 = 0.316.
        let w = words(&[("q", "y y y x"), ("s1", "x x"), ("s2", "y z")]);
        assert_eq!(predict(&e, &w), "b");
        // No shared word with anyone: all zero, the first support in prompt order.
        let w = words(&[("q", "m"), ("s1", "x"), ("s2", "y")]);
        assert_eq!(predict(&e, &w), "a");
        let e2 = ep(&[("s2", "b"), ("s1", "a")], ("q", "b"));
        assert_eq!(predict(&e2, &w), "b");
        // An exact tie between two supports: the first shown.
        let w = words(&[("q", "x y"), ("s1", "x"), ("s2", "y")]);
        assert_eq!(predict(&e, &w), "a");
        assert_eq!(predict(&e2, &w), "b");
    }
}
