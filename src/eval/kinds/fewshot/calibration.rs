//! Calibration tokenizers: token text whose class signal is known, scored beside the suite's
//! tokens over the same episodes and prompts, so every few-shot result carries its judge's
//! ceiling and floor.
//!
//! - `oracle`: every image of a class is one English word (drawn per run from [`WORDS`],
//!   never a class name), repeated: perfect tokens, which a judge that reads copies at ~100%;
//! - `noisy-<p>`: each word is the class word with probability `p`, else a word of [`POOL`];
//! - `random`: [`POOL`] words only: no class signal, chance for any judge.
//!
//! An image's words depend only on the run's seed, the calibration and the image (its index in
//! the split and its true class), so an image reads the same in every episode, as a tokenizer's
//! tokens do. An image has as many words as the suite's tokens give it before selection (the
//! model's tokens per image, or a tokens file's mean), and the point's `per_image`/`select`
//! pick from them as from any tokenizer's words (they are words: nothing is filtered out as
//! special or a word piece).

use crate::error::{Error, Result};
use crate::rng::Rng;
use serde_json::{json, Value};

/// The oracle's words: common concrete English nouns, none a class name of the data sets here
/// (a drawn word that equals a class name is passed over).
pub const WORDS: &[&str] = &[
    "apple", "river", "stone", "violin", "tiger", "candle", "harbor", "maple", "copper", "meadow",
    "lantern", "pebble", "orchid", "falcon", "glacier", "walnut", "anchor", "cactus", "dolphin",
    "ember", "feather", "garlic", "hammer", "island", "jasmine", "kettle", "lemon", "marble",
    "needle", "olive", "pepper", "quartz", "rabbit", "saddle", "tulip", "umbrella", "valley",
    "wagon", "yarn", "zebra", "acorn", "bamboo", "canyon", "desert", "engine", "forest", "guitar",
    "helmet", "igloo", "jungle", "ladder", "mirror", "nectar", "oyster", "parrot", "quiver",
    "ribbon", "spider", "tractor", "velvet", "window", "beacon", "cobalt", "dagger",
];

/// The noise words (30), none in [`WORDS`] nor a class name.
pub const POOL: &[&str] = &[
    "table", "paper", "sugar", "cloud", "music", "garden", "silver", "pencil", "rocket", "planet",
    "bridge", "camera", "winter", "basket", "button", "circle", "letter", "mountain", "ocean",
    "pillow", "rain", "school", "thunder", "tower", "train", "wheel", "yellow", "honey", "kitten",
    "shadow",
];

/// One calibration tokenizer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Calibration {
    Oracle,
    /// Each word the class word with this probability.
    Noisy(f64),
    Random,
}

impl Calibration {
    /// `oracle`, `random`, `noisy-<p>` with 0 < p < 1.
    pub fn parse(s: &str) -> Option<Calibration> {
        match s {
            "oracle" => Some(Calibration::Oracle),
            "random" => Some(Calibration::Random),
            _ => {
                let p: f64 = s.strip_prefix("noisy-")?.parse().ok()?;
                (p > 0.0 && p < 1.0).then_some(Calibration::Noisy(p))
            }
        }
    }

    pub fn name(&self) -> String {
        match self {
            Calibration::Oracle => "oracle".into(),
            Calibration::Random => "random".into(),
            Calibration::Noisy(p) => format!("noisy-{p}"),
        }
    }

    /// The metric prefix of its row at sweep point `point` (`calibration-oracle`,
    /// `calibration-oracle/per_image-8`).
    pub fn row_name(&self, point: &str) -> String {
        if point.is_empty() {
            format!("calibration-{}", self.name())
        } else {
            format!("calibration-{}/{point}", self.name())
        }
    }

    /// The share of an image's words that are its class word.
    pub fn signal(&self) -> f64 {
        match self {
            Calibration::Oracle => 1.0,
            Calibration::Noisy(p) => *p,
            Calibration::Random => 0.0,
        }
    }
}

/// The default set: the ceiling, two points of the curve, the floor.
pub fn default_names() -> Vec<String> {
    ["oracle", "noisy-0.5", "noisy-0.25", "random"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// The words of one run: each class's oracle word, drawn with the run's seed.
#[derive(Debug, Clone)]
pub struct Calibrator {
    seed: u64,
    /// Class index -> its word.
    words: Vec<String>,
}

impl Calibrator {
    /// Draw a word per class (`class_names`, the data set's) from [`WORDS`], passing over any
    /// that is a class name.
    pub fn draw(class_names: &[String], seed: u64) -> Result<Calibrator> {
        let is_name = |w: &str| class_names.iter().any(|c| c.eq_ignore_ascii_case(w));
        let mut rng = Rng::derive(seed, "calibration/words", 0);
        let words: Vec<String> = rng
            .permutation(WORDS.len())
            .into_iter()
            .map(|k| WORDS[k])
            .filter(|w| !is_name(w))
            .take(class_names.len())
            .map(String::from)
            .collect();
        if words.len() < class_names.len() {
            return Err(Error::setting(
                "tokens.calibration",
                format!(
                    "the oracle needs a word per class: {} classes, {} words that are not class names",
                    class_names.len(),
                    words.len()
                ),
            ));
        }
        Ok(Calibrator { seed, words })
    }

    /// The words of image `index` (of class `label`) under `c`: `n` of them.
    pub fn tokens(&self, c: Calibration, index: usize, label: usize, n: usize) -> Vec<String> {
        let word = &self.words[label];
        let p = c.signal();
        let mut rng = Rng::derive(
            self.seed,
            &format!("calibration/{}", c.name()),
            index as u64,
        );
        (0..n)
            .map(|_| {
                if p >= 1.0 || (p > 0.0 && rng.uniform() < p) {
                    word.clone()
                } else {
                    POOL[rng.below(POOL.len())].to_string()
                }
            })
            .collect()
    }

    /// What the result records: the seed, each class's word, the pool.
    pub fn record(&self, class_names: &[String]) -> Value {
        let words: serde_json::Map<String, Value> = class_names
            .iter()
            .zip(&self.words)
            .map(|(c, w)| (c.clone(), json!(w)))
            .collect();
        json!({"seed": self.seed, "oracle_words": words, "pool": POOL})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        crate::data::FASHION_MNIST_CLASSES
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn names_parse_and_signals_are_the_share_of_class_words() {
        assert_eq!(Calibration::parse("oracle"), Some(Calibration::Oracle));
        assert_eq!(
            Calibration::parse("noisy-0.25"),
            Some(Calibration::Noisy(0.25))
        );
        assert_eq!(Calibration::parse("noisy-1"), None);
        assert_eq!(Calibration::parse("noisy-0"), None);
        assert_eq!(Calibration::parse("noisy-x"), None);
        assert_eq!(Calibration::parse("pixels"), None);
        assert_eq!(Calibration::Noisy(0.5).name(), "noisy-0.5");
        // The word lists are what they say: disjoint, no class names, 30 noise words.
        assert_eq!(POOL.len(), 30);
        let classes = names();
        for w in WORDS.iter().chain(POOL) {
            assert!(!classes.iter().any(|c| c.eq_ignore_ascii_case(w)), "{w}");
        }
        assert!(WORDS.iter().all(|w| !POOL.contains(w)));
        let distinct: std::collections::BTreeSet<&&str> = WORDS.iter().chain(POOL).collect();
        assert_eq!(distinct.len(), WORDS.len() + POOL.len());
    }

    #[test]
    fn words_are_per_class_per_seed_and_the_noise_has_its_rate() {
        let classes = names();
        let a = Calibrator::draw(&classes, 0).unwrap();
        let b = Calibrator::draw(&classes, 1).unwrap();
        assert_ne!(a.words, b.words, "drawn per seed");
        let distinct: std::collections::BTreeSet<&String> = a.words.iter().collect();
        assert_eq!(distinct.len(), classes.len());
        // Oracle: one word, the class's, every time; the same image reads the same.
        let o = a.tokens(Calibration::Oracle, 7, 3, 64);
        assert!(o.iter().all(|w| *w == a.words[3]) && o.len() == 64);
        assert_eq!(
            a.tokens(Calibration::Noisy(0.5), 7, 3, 64),
            a.tokens(Calibration::Noisy(0.5), 7, 3, 64)
        );
        // Noisy-p: about p of the words are the class word (binomial, 40,000 draws).
        for p in [0.25, 0.5] {
            let (mut hit, mut n) = (0usize, 0usize);
            for i in 0..625 {
                for w in a.tokens(Calibration::Noisy(p), i, i % 10, 64) {
                    hit += (w == a.words[i % 10]) as usize;
                    n += 1;
                }
            }
            let rate = hit as f64 / n as f64;
            let sd = (p * (1.0 - p) / n as f64).sqrt();
            assert!((rate - p).abs() < 5.0 * sd, "noisy-{p}: {rate}");
        }
        // Random: pool words only, never a class word.
        for i in 0..50 {
            for w in a.tokens(Calibration::Random, i, i % 10, 64) {
                assert!(POOL.contains(&w.as_str()) && !a.words.contains(&w), "{w}");
            }
        }
        let r = a.record(&classes);
        assert_eq!(r["oracle_words"]["Bag"], a.words[8]);
        // Too few words for the classes is an error naming the setting.
        let many: Vec<String> = (0..200).map(|i| format!("c{i}")).collect();
        let e = Calibrator::draw(&many, 0).unwrap_err().to_string();
        assert!(e.contains("tokens.calibration"), "{e}");
    }
}
