//! Reading an answer: the rule that turns what the LLM wrote into a class name (or none).

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_and_exact_match() {
        let classes: Vec<String> = ["T-shirt/top", "Ankle boot", "Bag"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(match_answer(" ankle  boot.\nContext: x", &classes), Some(1));
        assert_eq!(match_answer("Bag", &classes), Some(2));
        assert_eq!(match_answer("T-shirt/top.", &classes), Some(0));
        assert_eq!(match_answer("Bags", &classes), None);
        assert_eq!(match_answer("", &classes), None);
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
