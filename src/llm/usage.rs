//! Tokens and money: what the answered requests used, what the billed ones (not answered by
//! the response cache) cost at the suite's prices, what a batch not yet cached would send,
//! and the caps (`llm.max_cost`, `llm.max_prompt_tokens`) checked before sending and while.

use super::settings::Prices;
use crate::error::{Error, Result};
use serde_json::{json, Value};

/// Tokens of the answered requests, and of those billed (not answered by the cache).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub prompt: u64,
    pub completion: u64,
    pub billed_prompt: u64,
    pub billed_completion: u64,
}

impl Usage {
    pub fn add(&mut self, o: Usage) {
        self.prompt += o.prompt;
        self.completion += o.completion;
        self.billed_prompt += o.billed_prompt;
        self.billed_completion += o.billed_completion;
    }

    /// What the billed tokens cost at `prices` (`None` unless priced).
    pub fn cost(&self, prices: &Prices) -> Option<f64> {
        prices
            .priced()
            .then(|| prices.cost(self.billed_prompt, self.billed_completion))
    }

    /// The `usage` record: the counts, and the billed ones' `cost` (`null` unless priced).
    pub fn record(&self, cost: Option<f64>) -> Value {
        json!({
            "prompt_tokens": self.prompt,
            "completion_tokens": self.completion,
            "billed_prompt_tokens": self.billed_prompt,
            "billed_completion_tokens": self.billed_completion,
            "cost": cost,
        })
    }
}

/// What the requests of a batch not yet in the response cache would send and cost. Prompt
/// tokens are the counted prompts' (exact with the server's tokenizer); completion tokens are
/// a range: at least one per request, at most the room each answer has.
#[derive(Debug, Clone)]
pub struct Estimate {
    pub requests: usize,
    pub to_send: usize,
    pub prompt_tokens: u64,
    pub completion_tokens: [u64; 2],
    /// `[low, high]` at the suite's prices, when they are set.
    pub cost: Option<[f64; 2]>,
}

impl Estimate {
    pub fn new(
        prices: &Prices,
        requests: usize,
        to_send: usize,
        prompt_tokens: u64,
        per_answer: u64,
    ) -> Estimate {
        let (lo, hi) = (to_send as u64, to_send as u64 * per_answer.max(1));
        Estimate {
            requests,
            to_send,
            prompt_tokens,
            completion_tokens: [lo, hi],
            cost: prices.priced().then(|| {
                [
                    prices.cost(prompt_tokens, lo),
                    prices.cost(prompt_tokens, hi),
                ]
            }),
        }
    }

    /// Two estimates together (several judges, or several batches).
    pub fn add(&mut self, o: &Estimate) {
        self.requests += o.requests;
        self.to_send += o.to_send;
        self.prompt_tokens += o.prompt_tokens;
        self.completion_tokens[0] += o.completion_tokens[0];
        self.completion_tokens[1] += o.completion_tokens[1];
        // A total of priced and unpriced batches has no price (it would under-count).
        self.cost = match (self.cost, o.cost) {
            (Some(a), Some(b)) => Some([a[0] + b[0], a[1] + b[1]]),
            _ => None,
        };
    }

    /// One line: requests, what the cache answers, tokens and cost.
    pub fn line(&self) -> String {
        let [lo, hi] = self.completion_tokens;
        format!(
            "{} requests ({} already answered in the response cache), {} to send: {} prompt tokens, {lo}-{hi} completion tokens{}",
            self.requests,
            self.requests - self.to_send,
            self.to_send,
            self.prompt_tokens,
            match self.cost {
                Some([a, b]) => format!(", estimated cost {a:.4}-{b:.4}"),
                None => " (no llm.price_* set: cost not estimated)".into(),
            }
        )
    }

    pub fn record(&self) -> Value {
        json!({
            "requests": self.requests, "to_send": self.to_send, "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens, "cost": self.cost,
        })
    }
}

/// The suite's caps on what is billed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Caps {
    pub max_cost: Option<f64>,
    pub max_prompt_tokens: Option<u64>,
}

impl Caps {
    /// Refuse a batch whose estimate already exceeds a cap (nothing is sent).
    pub fn check(&self, est: &Estimate) -> Result<()> {
        let prompt = est.prompt_tokens;
        if let Some(cap) = self.max_prompt_tokens.filter(|&cap| prompt > cap) {
            return Err(Error::setting(
                "llm.max_prompt_tokens",
                format!("the run would send {prompt} prompt tokens, over the cap of {cap}; nothing was sent (fewer episodes.count, shots or tokens.per_image, or a higher cap; --dry-run shows the estimate)"),
            ));
        }
        if let (Some(cap), Some([lo, _])) = (self.max_cost, est.cost) {
            if lo > cap {
                return Err(Error::setting(
                    "llm.max_cost",
                    format!("the run would cost at least {lo:.4} (prompts, one answer token each), over the cap of {cap}; nothing was sent (fewer episodes, or a higher cap; --dry-run shows the estimate)"),
                ));
            }
        }
        Ok(())
    }

    /// Once the billed tokens so far exceed a cap: why sending stops.
    pub fn reached(
        &self,
        prices: &Prices,
        billed_prompt: u64,
        billed_completion: u64,
    ) -> Option<String> {
        if let Some(cap) = self.max_prompt_tokens.filter(|&cap| billed_prompt > cap) {
            return Some(format!(
                "llm.max_prompt_tokens reached: {billed_prompt} prompt tokens sent, cap {cap}"
            ));
        }
        let cost = prices.cost(billed_prompt, billed_completion);
        if let Some(cap) = self.max_cost.filter(|&cap| cost > cap) {
            return Some(format!("llm.max_cost reached: {cost:.4} spent, cap {cap}"));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_price_their_range_and_caps_refuse_or_stop() {
        let p = Prices {
            prompt_per_million: 2.0,
            completion_per_million: 10.0,
        };
        let e = Estimate::new(&p, 10, 4, 1_000_000, 8);
        assert_eq!(e.completion_tokens, [4, 32]);
        let [lo, hi] = e.cost.unwrap();
        assert!((lo - (2.0 + 4.0 * 10.0 / 1e6)).abs() < 1e-12);
        assert!((hi - (2.0 + 32.0 * 10.0 / 1e6)).abs() < 1e-12);
        assert!(
            e.line().contains("10 requests (6 already answered"),
            "{}",
            e.line()
        );
        let caps = Caps {
            max_cost: Some(1.0),
            max_prompt_tokens: None,
        };
        let err = caps.check(&e).unwrap_err().to_string();
        assert!(err.contains("llm.max_cost"), "{err}");
        assert!(Caps::default().check(&e).is_ok());
        let caps = Caps {
            max_cost: None,
            max_prompt_tokens: Some(100),
        };
        assert!(caps.reached(&p, 100, 0).is_none());
        assert!(caps
            .reached(&p, 101, 0)
            .unwrap()
            .contains("max_prompt_tokens"));
        let unpriced = Estimate::new(&Prices::default(), 1, 1, 5, 8);
        assert!(unpriced.cost.is_none() && unpriced.line().contains("not estimated"));
        let mut sum = e.clone();
        sum.add(&unpriced);
        assert_eq!(
            (sum.requests, sum.to_send, sum.prompt_tokens),
            (11, 5, 1_000_005)
        );
    }
}
