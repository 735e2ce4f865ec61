//! Reading an answer: the rule that turns what the LLM wrote into a class name (or none).
//!
//! The paper's protocol (Frozen's) scores the generated answer by exact match with the class
//! name. Judges go on after the name (`" Pullover. The context \"stone"`, `" Dress.\nContext:
//! ..."`), and chat models may first repeat the prompt's cue (`"Classification: Bag."`), so
//! the answer is the generated text's first line, cut at its first sentence end, with a
//! leading repeat of the cue dropped; surrounding quotes, case, whitespace and trailing
//! punctuation are normalised; then it must equal a class name exactly ([`RULE`], recorded in
//! every result). "The answer is Bag" is not "Bag": nothing else is stripped.

/// The rule, as results record it.
pub const RULE: &str = "generate: the answer is the generated text's first non-empty line (tried whole first), else that line cut at its first sentence end (. ! or ? before a space, a quote or the end); without a leading repeat of the prompt's answer cue (the example template before {label}, e.g. `Classification:`); surrounding quotes, asterisks and spaces removed, inner spaces collapsed, trailing punctuation removed, case folded; it must then equal a class name of the episode exactly, else any class name of the data set (a wrong answer), else it names no class. first-token and loglik: unchanged (closed set).";

const QUOTES: &[char] = &[
    '"', '\'', '`', '*', '\u{201c}', '\u{201d}', '\u{2018}', '\u{2019}', '\u{ab}', '\u{bb}',
];

/// Whether the character at byte `i` of `s` (one of `. ! ?`) ends a sentence: it is followed
/// by whitespace, a closing quote or bracket, or nothing (so `3.5` and `e.g` stay whole).
fn ends_sentence(s: &str, i: usize) -> bool {
    match s[i + 1..].chars().next() {
        None => true,
        Some(c) => c.is_whitespace() || QUOTES.contains(&c) || matches!(c, ')' | ']'),
    }
}

/// `s` cut before its first sentence end.
fn first_sentence(s: &str) -> &str {
    for (i, c) in s.char_indices() {
        if matches!(c, '.' | '!' | '?') && ends_sentence(s, i) {
            return &s[..i];
        }
    }
    s
}

/// Case folded, inner whitespace collapsed, surrounding quotes and spaces and trailing
/// punctuation removed.
fn tidy(s: &str) -> String {
    let mut t = s.trim();
    loop {
        let u = t
            .trim_matches(QUOTES)
            .trim_end_matches(['.', ',', ';', ':', '!', '?'])
            .trim();
        if u == t {
            break;
        }
        t = u;
    }
    t.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// The answer's first line with text, without a leading repeat of the prompt's answer cue
/// (`Classification:`): a line that is only the cue is passed over. The cue counts only as a
/// whole word (`is a` is not the start of `is an`).
fn answer_line<'a>(text: &'a str, cue: &str) -> &'a str {
    let cue = cue.trim();
    text.lines()
        .map(|l| {
            let l = l.trim();
            match l.get(..cue.len()) {
                Some(head)
                    if !cue.is_empty()
                        && head.eq_ignore_ascii_case(cue)
                        && l[cue.len()..]
                            .chars()
                            .next()
                            .is_none_or(|c| c.is_whitespace() || !c.is_alphanumeric()) =>
                {
                    l[cue.len()..].trim()
                }
                _ => l,
            }
        })
        .find(|l| !l.is_empty())
        .unwrap_or("")
}

/// A class name as the rule compares it.
pub fn normalize(name: &str) -> String {
    tidy(name)
}

/// How answers are read in a run: the prompt's answer cue and every class name of the data
/// set (an open-ended answer may name a class outside the episode).
#[derive(Debug, Clone, Default)]
pub struct Reading {
    pub cue: String,
    pub names: Vec<String>,
}

/// The class an answer names (see [`RULE`]): one of the episode's `classes`, else one of the
/// data set's `names`, else none.
/// The whole answer line is tried first, so a name with a sentence end inside (`St. Bernard`)
/// is still read whole.
pub fn match_answer(text: &str, cue: &str, classes: &[String], names: &[String]) -> Option<String> {
    let line = answer_line(text, cue);
    [tidy(line), tidy(first_sentence(line))]
        .into_iter()
        .filter(|a| !a.is_empty())
        .find_map(|a| classes.iter().chain(names).find(|c| normalize(c) == a))
        .cloned()
}

/// The answer cue of an example template: its text before `{label}` on the label's line,
/// after `{image}` if that is on the same line (`"Context: {image}\nClassification:
/// {label}.\n"` gives `Classification:`).
pub fn answer_cue(example_template: &str) -> String {
    let cut = example_template
        .find("{label}")
        .unwrap_or(example_template.len());
    let line = example_template[..cut].rsplit('\n').next().unwrap_or("");
    let line = line.rsplit("{image}").next().unwrap_or(line);
    line.trim().to_string()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fmnist() -> Vec<String> {
        crate::data::FASHION_MNIST_CLASSES
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    const CUE: &str = "Classification:";

    /// Real replies of the judges (tests/data/judge_replies.json, written by the script beside
    /// it against the project's llama-server), each with the class a reader takes from it.
    #[test]
    fn real_replies_of_the_judges_are_read_as_a_reader_would() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/judge_replies.json"
        ))
        .unwrap();
        let data: serde_json::Value = serde_json::from_str(&text).unwrap();
        let want: &[(&str, &[Option<&str>])] = &[
            (
                "qwen2.5-coder-1.5b",
                &[
                    Some("Shirt"),
                    Some("Shirt"),
                    Some("Bag"),
                    Some("Pullover"),
                    None,
                    Some("Dress"),
                    Some("Bag"),
                    Some("Pullover"),
                    Some("Coat"),
                    Some("Shirt"),
                    Some("T-shirt/top"),
                    Some("Shirt"),
                    Some("T-shirt/top"),
                    Some("Pullover"),
                    Some("Sandal"),
                    Some("Dress"),
                    Some("Dress"),
                    Some("Trouser"),
                    Some("T-shirt/top"),
                    Some("Coat"),
                ],
            ),
            (
                "smollm2",
                &[
                    Some("Shirt"),
                    Some("Trouser"),
                    Some("Shirt"),
                    Some("Shirt"),
                    Some("Sneaker"),
                    Some("Shirt"),
                    None,
                    Some("Shirt"),
                    Some("Sneaker"),
                    Some("Shirt"),
                    Some("T-shirt/top"),
                    None,
                    Some("Shirt"),
                    Some("Bag"),
                    Some("Sandal"),
                    Some("Sneaker"),
                    Some("Bag"),
                    None,
                    Some("Shirt"),
                    Some("Shirt"),
                ],
            ),
        ];
        let names = fmnist();
        for (judge, expected) in want {
            let replies = data[judge].as_array().unwrap();
            assert_eq!(replies.len(), expected.len(), "{judge}");
            for (r, w) in replies.iter().zip(*expected) {
                let reply = r["reply"].as_str().unwrap();
                let got = match_answer(reply, CUE, &[], &names);
                assert_eq!(got.as_deref(), *w, "{judge}: {reply:?}");
            }
        }
    }

    #[test]
    fn continuations_quotes_cues_and_names_inside_names() {
        let names = fmnist();
        let ep: Vec<String> = vec!["Shirt".into(), "T-shirt/top".into()];
        let m = |t: &str| match_answer(t, CUE, &ep, &names);
        // Continuations after the name: a sentence, a new line, a list.
        assert_eq!(
            m(" Pullover. The context \"stone stone").as_deref(),
            Some("Pullover")
        );
        assert_eq!(m(" Shirt.\nContext: apple").as_deref(), Some("Shirt"));
        assert_eq!(m(" Dress. Coat. Dress.").as_deref(), Some("Dress"));
        // A leading new line, quotes, case, inner spaces.
        assert_eq!(m("\n Ankle  boot.").as_deref(), Some("Ankle boot"));
        assert_eq!(m(" \"T-shirt/top\".").as_deref(), Some("T-shirt/top"));
        assert_eq!(m(" 'shirt'").as_deref(), Some("Shirt"));
        assert_eq!(m(" \u{201c}Bag.\u{201d} It is").as_deref(), Some("Bag"));
        assert_eq!(m(" **Sneaker**").as_deref(), Some("Sneaker"));
        // The prompt's cue repeated first is dropped; any other preamble is not an answer.
        assert_eq!(m("Classification: Bag.").as_deref(), Some("Bag"));
        assert_eq!(m("The answer is Bag."), None);
        assert_eq!(m("Answer: Bag"), None);
        // A name inside another is not that name, in either direction.
        assert_eq!(m(" T-shirt/top").as_deref(), Some("T-shirt/top"));
        assert_eq!(m(" Shirt").as_deref(), Some("Shirt"));
        assert_eq!(m(" T-shirt."), None);
        assert_eq!(m(" Shirts"), None);
        assert_eq!(m(""), None);
        assert_eq!(m("\n\n"), None);
        // A name outside the episode is that (wrong) class; a period inside a token stays.
        assert_eq!(m(" Coat").as_deref(), Some("Coat"));
        let odd: Vec<String> = vec!["v1.5".into(), "St. Bernard".into()];
        assert_eq!(
            match_answer(" v1.5. Next", CUE, &odd, &[]).as_deref(),
            Some("v1.5")
        );
        // A name with a sentence end inside is read whole when it is the whole line.
        assert_eq!(
            match_answer(" St. Bernard.", CUE, &odd, &[]).as_deref(),
            Some("St. Bernard")
        );
        assert_eq!(m(" Bag. Coat.").as_deref(), Some("Bag"));
        // A line that is only the cue: the answer is on the next one. The cue is a whole word.
        assert_eq!(m("Classification:\nBag").as_deref(), Some("Bag"));
        let boots: Vec<String> = vec!["n Ankle boot".into(), "Ankle boot".into()];
        assert_eq!(
            match_answer("is an Ankle boot", "is a", &boots, &[]).as_deref(),
            None,
            "`is a` must not eat the `a` of `an`"
        );
        assert_eq!(
            match_answer("is a Ankle boot", "is a", &boots, &[]).as_deref(),
            Some("Ankle boot")
        );
        assert_eq!(
            answer_cue("Context: {image}\nClassification: {label}.\n"),
            CUE
        );
        assert_eq!(answer_cue("{image} is a {label}"), "is a");
    }

    #[test]
    fn first_token_skips_ambiguous_prefixes() {
        let classes: Vec<String> = ["Shirt", "Sneaker", "Bag"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let top = |v: &[(&str, f64)]| {
            v.iter()
                .map(|(t, l)| (t.to_string(), *l))
                .collect::<Vec<_>>()
        };
        // " S" fits two names and is passed over; " Sne" decides.
        assert_eq!(
            first_token_pick(
                &top(&[(" S", -0.1), (" Sne", -1.0), (" Bag", -2.0)]),
                &classes
            ),
            Some(1)
        );
        assert_eq!(first_token_pick(&top(&[("Ġbag", -0.5)]), &classes), Some(2));
        assert_eq!(
            first_token_pick(&top(&[(" the", -0.1), ("\n", -0.2)]), &classes),
            None
        );
    }
}
