//! The codebook's text side: what each word-embedding row *says*. Turns token ids into text for
//! prompts (WordPiece `##` continuations, RoBERTa's byte-level `Ġ` word starts, SentencePiece
//! `▁`), and names the special tokens LQAE needs (the mask token above all).

use super::config::Family;
use crate::error::{Error, Result};
use std::path::Path;
use tokenizers::Tokenizer;

/// How the tokenizer marks word boundaries inside its pieces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PieceStyle {
    /// BERT: a piece that continues a word starts with a prefix (`##`).
    WordPiece { continuation_prefix: String },
    /// GPT-2/RoBERTa byte-level BPE: bytes mapped to printable chars, `Ġ` is a space.
    ByteLevel,
    /// SentencePiece (XLM-R, CamemBERT): `▁` starts a word.
    SentencePiece,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialIds {
    pub mask: u32,
    pub pad: Option<u32>,
    /// `[CLS]` / `<s>`.
    pub cls: Option<u32>,
    /// `[SEP]` / `</s>`.
    pub sep: Option<u32>,
    pub unk: Option<u32>,
}

/// One token as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenText {
    /// The readable text, without continuation prefix or word-start marker.
    pub text: String,
    /// False for a piece that continues the previous word (`##ing`, or a BPE piece without `Ġ`).
    pub starts_word: bool,
    /// A special token of the tokenizer (`[CLS]`, `<mask>`, ...).
    pub special: bool,
}

#[derive(Debug, Clone)]
pub struct Vocab {
    pieces: Vec<String>,
    special: Vec<bool>,
    style: PieceStyle,
    pub special_ids: SpecialIds,
}

impl Vocab {
    /// `path` is only used in error messages.
    pub fn from_tokenizer(tok: &Tokenizer, family: Family, path: &Path) -> Result<Self> {
        let map = tok.get_vocab(true);
        let n = map.keys().len();
        let mut pieces = vec![None; n];
        for (piece, &id) in &map {
            let slot = pieces.get_mut(id as usize).ok_or_else(|| {
                Error::file(path, format!("token `{piece}` has id {id}, but the vocabulary has only {n} entries: ids must be 0..{n}"))
            })?;
            *slot = Some(piece.clone());
        }
        let pieces: Vec<String> = pieces
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                p.ok_or_else(|| {
                    Error::file(path, format!("no token has id {i}: ids must be contiguous"))
                })
            })
            .collect::<Result<_>>()?;
        let mut special = vec![false; n];
        for (id, t) in tok.get_added_tokens_decoder() {
            if t.special {
                special[id as usize] = true;
            }
        }
        let style = match family {
            Family::Bert => PieceStyle::WordPiece {
                continuation_prefix: "##".into(),
            },
            Family::Roberta => {
                let sp = pieces.iter().filter(|p| p.starts_with('▁')).count();
                let bl = pieces.iter().filter(|p| p.starts_with('Ġ')).count();
                if sp > bl {
                    PieceStyle::SentencePiece
                } else {
                    PieceStyle::ByteLevel
                }
            }
        };
        let names: [&str; 5] = match family {
            Family::Bert => ["[MASK]", "[PAD]", "[CLS]", "[SEP]", "[UNK]"],
            Family::Roberta => ["<mask>", "<pad>", "<s>", "</s>", "<unk>"],
        };
        let id = |s: &str| map.get(s).copied();
        let mask = id(names[0]).ok_or_else(|| {
            Error::file(
                path,
                format!(
                    "the tokenizer has no mask token `{}`; LQAE masks tokens with it",
                    names[0]
                ),
            )
        })?;
        let special_ids = SpecialIds {
            mask,
            pad: id(names[1]),
            cls: id(names[2]),
            sep: id(names[3]),
            unk: id(names[4]),
        };
        Ok(Self {
            pieces,
            special,
            style,
            special_ids,
        })
    }

    pub fn len(&self) -> usize {
        self.pieces.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    pub fn style(&self) -> &PieceStyle {
        &self.style
    }

    /// The raw piece as stored in the tokenizer (`##ing`, `Ġthe`).
    pub fn piece(&self, id: u32) -> &str {
        &self.pieces[id as usize]
    }

    pub fn is_special(&self, id: u32) -> bool {
        self.special[id as usize]
    }

    pub fn token_text(&self, id: u32) -> TokenText {
        let piece = self.piece(id);
        if self.is_special(id) {
            return TokenText {
                text: piece.to_string(),
                starts_word: true,
                special: true,
            };
        }
        let (text, starts_word) = match &self.style {
            PieceStyle::WordPiece {
                continuation_prefix,
            } => match piece.strip_prefix(continuation_prefix.as_str()) {
                Some(rest) if !rest.is_empty() => (rest.to_string(), false),
                _ => (piece.to_string(), true),
            },
            PieceStyle::ByteLevel => {
                let text = byte_level_decode(piece);
                match text.strip_prefix(' ') {
                    Some(rest) => (rest.to_string(), true),
                    None => (text, false),
                }
            }
            PieceStyle::SentencePiece => match piece.strip_prefix('▁') {
                Some(rest) => (rest.to_string(), true),
                None => (piece.to_string(), false),
            },
        };
        TokenText {
            text,
            starts_word,
            special: false,
        }
    }

    /// Text of a token sequence as the tokenizer's decoder would write it: continuation pieces
    /// glued to the word before, words separated by one space. Special tokens are kept.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut out = String::new();
        for &id in ids {
            let t = self.token_text(id);
            if !out.is_empty() && t.starts_word {
                out.push(' ');
            }
            out.push_str(&t.text);
        }
        out
    }
}

/// GPT-2's byte <-> printable-char table: printable Latin-1 bytes stand for themselves, the
/// other 68 bytes map to U+0100 upwards in byte order.
fn byte_for_char(c: char) -> Option<u8> {
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let cp = c as u32;
    if cp < 256 {
        return printable(cp).then_some(cp as u8);
    }
    let k = cp - 256;
    (0u32..256)
        .filter(|&b| !printable(b))
        .nth(k as usize)
        .map(|b| b as u8)
}

fn byte_level_decode(piece: &str) -> String {
    let bytes: Vec<u8> = piece
        .chars()
        .map(|c| byte_for_char(c).unwrap_or(b'?'))
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_table_matches_gpt2() {
        assert_eq!(byte_for_char('Ġ'), Some(b' '));
        assert_eq!(byte_for_char('Ċ'), Some(b'\n'));
        assert_eq!(byte_for_char('A'), Some(b'A'));
        assert_eq!(byte_for_char('Ā'), Some(0)); // U+0100 is byte 0
        assert_eq!(byte_for_char('ł'), Some(160)); // U+0142, the 67th non-printable byte
        assert_eq!(byte_for_char('Ń'), Some(173)); // U+0143, the last one
                                                   // "é" in UTF-8 is C3 A9, written as the chars for those bytes.
        assert_eq!(byte_level_decode("ĠcafÃ©"), " café");
    }
}
