//! What an OpenAI-compatible server answered: the text, the token log-probabilities in either
//! of the two shapes servers use, the token counts and (llama-server) the server's own time.

use serde_json::Value;

/// One generated (or echoed prompt) token with its log-probability and the alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub token: String,
    /// `None` for the first prompt token of an echoed prompt (it has no context).
    pub logprob: Option<f64>,
    /// The most likely tokens at this position, most likely first.
    pub top: Vec<(String, f64)>,
    /// Character offset of the token in prompt + completion (legacy shape only).
    pub offset: Option<usize>,
}

/// The parts of a completion the scorers use.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Completion {
    pub text: String,
    /// `None` when the body carries no log-probabilities at all.
    pub logprobs: Option<Vec<TokenLogprob>>,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    /// Server-side time (prompt + generation) when the server reports it (llama-server `timings`).
    pub server_ms: Option<f64>,
    pub finish_reason: Option<String>,
}

/// Read a `/v1/completions` or `/v1/chat/completions` body. Errors say what is missing.
pub fn parse(body: &Value) -> Result<Completion, String> {
    if let Some(err) = body.get("error") {
        return Err(format!("the server answered with an error object: {err}"));
    }
    let choice = body
        .get("choices")
        .and_then(|c| c.as_array())
        .and_then(|c| c.first())
        .ok_or("the body has no `choices[0]`")?;
    let text = match (choice.get("text"), choice.pointer("/message/content")) {
        (Some(Value::String(t)), _) => t.clone(),
        (_, Some(Value::String(t))) => t.clone(),
        (_, Some(Value::Null)) => String::new(),
        _ => return Err("`choices[0]` has neither `text` nor `message.content`".into()),
    };
    let logprobs = match choice.get("logprobs") {
        None | Some(Value::Null) => None,
        Some(lp) => Some(parse_logprobs(lp)?),
    };
    let usage = body.get("usage");
    let count = |k: &str| usage.and_then(|u| u.get(k)).and_then(|v| v.as_u64());
    let timings = body.get("timings");
    let ms = |k: &str| timings.and_then(|t| t.get(k)).and_then(|v| v.as_f64());
    let server_ms = match (ms("prompt_ms"), ms("predicted_ms")) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0)),
    };
    Ok(Completion {
        text,
        logprobs,
        prompt_tokens: count("prompt_tokens"),
        completion_tokens: count("completion_tokens"),
        server_ms,
        finish_reason: choice
            .get("finish_reason")
            .and_then(|v| v.as_str())
            .map(String::from),
    })
}

/// Both shapes: the legacy completions one (`tokens`, `token_logprobs`, `top_logprobs` as a
/// list of `{token: logprob}` maps, `text_offset`) and the chat one that llama-server also
/// uses for completions (`content: [{token, logprob, top_logprobs: [{token, logprob}]}]`).
pub fn parse_logprobs(lp: &Value) -> Result<Vec<TokenLogprob>, String> {
    if let Some(content) = lp.get("content") {
        let items = content
            .as_array()
            .ok_or("`logprobs.content` is not a list")?;
        return items
            .iter()
            .enumerate()
            .map(|(i, it)| {
                let token = it
                    .get("token")
                    .and_then(|t| t.as_str())
                    .ok_or(format!("`logprobs.content[{i}].token` is missing"))?;
                let logprob = it.get("logprob").and_then(|v| v.as_f64());
                let mut top = Vec::new();
                if let Some(list) = it.get("top_logprobs").and_then(|t| t.as_array()) {
                    for alt in list {
                        if let (Some(t), Some(l)) = (
                            alt.get("token").and_then(|t| t.as_str()),
                            alt.get("logprob").and_then(|v| v.as_f64()),
                        ) {
                            top.push((t.to_string(), l));
                        }
                    }
                }
                sort_top(&mut top);
                Ok(TokenLogprob {
                    token: token.to_string(),
                    logprob,
                    top,
                    offset: None,
                })
            })
            .collect();
    }
    let tokens = lp
        .get("tokens")
        .and_then(|t| t.as_array())
        .ok_or("`logprobs` has neither `content` (chat shape) nor `tokens` (completions shape)")?;
    let lps = lp.get("token_logprobs").and_then(|t| t.as_array());
    let tops = lp.get("top_logprobs").and_then(|t| t.as_array());
    let offsets = lp.get("text_offset").and_then(|t| t.as_array());
    tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let token = t
                .as_str()
                .ok_or(format!("`logprobs.tokens[{i}]` is not a string"))?;
            let mut top: Vec<(String, f64)> = tops
                .and_then(|v| v.get(i))
                .and_then(|m| m.as_object())
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| v.as_f64().map(|l| (k.clone(), l)))
                        .collect()
                })
                .unwrap_or_default();
            sort_top(&mut top);
            Ok(TokenLogprob {
                token: token.to_string(),
                logprob: lps.and_then(|v| v.get(i)).and_then(|v| v.as_f64()),
                top,
                offset: offsets
                    .and_then(|v| v.get(i))
                    .and_then(|v| v.as_u64())
                    .map(|o| o as usize),
            })
        })
        .collect()
}

fn sort_top(top: &mut [(String, f64)]) {
    top.sort_by(|a, b| b.1.total_cmp(&a.1));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_the_legacy_completions_shape() {
        let body = json!({
            "choices": [{"text": " Bag", "finish_reason": "stop", "logprobs": {
                "tokens": [" Bag", "."],
                "token_logprobs": [-0.25, -1.5],
                "top_logprobs": [{" Bag": -0.25, " Coat": -2.0}, {".": -1.5}],
                "text_offset": [10, 14]}}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 2}
        });
        let c = parse(&body).unwrap();
        assert_eq!(c.text, " Bag");
        let lp = c.logprobs.unwrap();
        assert_eq!(lp.len(), 2);
        assert_eq!(lp[0].top[0], (" Bag".to_string(), -0.25));
        assert_eq!(lp[0].top[1], (" Coat".to_string(), -2.0));
        assert_eq!(lp[1].offset, Some(14));
        assert_eq!((c.prompt_tokens, c.completion_tokens), (Some(12), Some(2)));
        assert_eq!(c.finish_reason.as_deref(), Some("stop"));
    }

    #[test]
    fn reads_the_chat_shape_and_llama_server_timings() {
        let body = json!({
            "choices": [{"message": {"role": "assistant", "content": "Coat"}, "logprobs": {"content": [
                {"token": "Coat", "logprob": -0.1, "bytes": [67], "top_logprobs": [
                    {"token": "Bag", "logprob": -3.0}, {"token": "Coat", "logprob": -0.1}]}]}}],
            "timings": {"prompt_ms": 12.5, "predicted_ms": 3.5}
        });
        let c = parse(&body).unwrap();
        assert_eq!(c.text, "Coat");
        let lp = c.logprobs.unwrap();
        assert_eq!(lp[0].logprob, Some(-0.1));
        assert_eq!(lp[0].top[0].0, "Coat", "sorted most likely first");
        assert_eq!(c.server_ms, Some(16.0));
        assert_eq!(c.prompt_tokens, None);
    }

    #[test]
    fn says_what_is_missing() {
        assert!(parse(&json!({"object": "x"}))
            .unwrap_err()
            .contains("choices[0]"));
        assert!(parse(&json!({"error": {"message": "bad"}}))
            .unwrap_err()
            .contains("error object"));
        let e = parse(&json!({"choices": [{"text": "a", "logprobs": {"foo": 1}}]})).unwrap_err();
        assert!(e.contains("neither `content`"), "{e}");
        assert_eq!(
            parse(&json!({"choices": [{"text": "a"}]}))
                .unwrap()
                .logprobs,
            None
        );
    }
}
