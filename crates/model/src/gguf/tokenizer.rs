//! The tokenizer and chat template a GGUF file's metadata describe.

use std::collections::HashSet;

use serde_json::{json, Map, Value as Json};

use candle_core::quantized::gguf_file::Value;

use super::metadata::{describe, value_as_i64};
use super::{GgufError, GgufFile};

impl GgufFile {
    /// The tokenizer the metadata describe, as a `tokenizer.json` value.
    pub fn tokenizer_json(&self) -> Result<Json, GgufError> {
        let model = self.string("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(GgufError::UnsupportedTokenizer {
                path: self.path.clone(),
                model: model.to_string(),
            });
        }
        let tokens = self.string_array("tokenizer.ggml.tokens")?;
        let merges = self.string_array("tokenizer.ggml.merges")?;
        let types: Vec<i64> = match self.content.metadata.get("tokenizer.ggml.token_type") {
            None => vec![1; tokens.len()],
            Some(v) => {
                let Value::Array(arr) = v else {
                    return Err(self.bad(
                        "tokenizer.ggml.token_type",
                        format!("expected an array, got {}", describe(v)),
                    ));
                };
                arr.iter()
                    .map(|x| value_as_i64(x).ok_or(()))
                    .collect::<Result<Vec<_>, ()>>()
                    .map_err(|_| self.bad("tokenizer.ggml.token_type", "not integers".into()))?
            }
        };
        if types.len() != tokens.len() {
            return Err(self.bad(
                "tokenizer.ggml.token_type",
                format!("{} entries for {} tokens", types.len(), tokens.len()),
            ));
        }

        let alphabet = byte_alphabet();
        let spelled: HashSet<char> = alphabet.iter().copied().collect();
        let mut vocab = Map::new();
        for (id, tok) in tokens.iter().enumerate() {
            let key = if tok.chars().all(|c| spelled.contains(&c)) {
                tok.clone()
            } else {
                tok.bytes().map(|b| alphabet[b as usize]).collect()
            };
            vocab.insert(key, json!(id));
        }
        let mut merge_pairs = Vec::with_capacity(merges.len());
        for (i, m) in merges.iter().enumerate() {
            let parts: Vec<&str> = m.split(' ').collect();
            if parts.len() != 2 {
                return Err(self.bad(
                    "tokenizer.ggml.merges",
                    format!("merge {i} `{m}` is not two tokens separated by one space"),
                ));
            }
            merge_pairs.push(json!([parts[0], parts[1]]));
        }

        // Special tokens: those marked control, plus the bos/eos/unk/pad ids the
        // metadata name (transformers registers those as special tokens too).
        let mut special_ids: Vec<usize> = Vec::new();
        for (id, (tok, t)) in tokens.iter().zip(&types).enumerate() {
            if *t == 3 && tok.chars().all(|c| spelled.contains(&c)) {
                special_ids.push(id);
            }
        }
        for key in [
            "tokenizer.ggml.bos_token_id",
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.unknown_token_id",
            "tokenizer.ggml.padding_token_id",
        ] {
            if let Some(id) = self.opt_usize(key)? {
                if id >= tokens.len() {
                    return Err(self.bad(
                        key,
                        format!("id {id} is outside the vocabulary of {}", tokens.len()),
                    ));
                }
                if !special_ids.contains(&id) && tokens[id].chars().all(|c| spelled.contains(&c)) {
                    special_ids.push(id);
                }
            }
        }
        special_ids.sort_unstable();
        let mut added = Vec::new();
        let mut seen = HashSet::new();
        for &id in &special_ids {
            if seen.insert(tokens[id].clone()) {
                added.push(added_token(id, &tokens[id], true));
            }
        }
        for (id, (tok, t)) in tokens.iter().zip(&types).enumerate() {
            if *t == 4 && vocab.contains_key(tok) && seen.insert(tok.clone()) {
                // transformers' `add_tokens` keeps the id the vocabulary gives the string.
                let vid = vocab[tok].as_u64().unwrap_or(id as u64) as usize;
                added.push(added_token(vid, tok, false));
            }
        }

        let pre = self.opt_string("tokenizer.ggml.pre")?;
        let pre_tokenizer = match pre.and_then(split_regex_for) {
            Some(re) => json!({
                "type": "Sequence",
                "pretokenizers": [
                    {"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false},
                    {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
                ]
            }),
            None => json!({
                "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true
            }),
        };
        Ok(json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": {
                "type": "TemplateProcessing",
                "single": [{"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {}
            },
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {
                "type": "BPE",
                "dropout": null,
                "unk_token": null,
                "continuing_subword_prefix": "",
                "end_of_word_suffix": "",
                "fuse_unk": false,
                "byte_fallback": false,
                "ignore_merges": false,
                "vocab": vocab,
                "merges": merge_pairs
            }
        }))
    }

    /// The tokenizer the metadata describe.
    pub fn tokenizer(&self) -> Result<tokenizers::Tokenizer, GgufError> {
        let j = self.tokenizer_json()?;
        let s = serde_json::to_string(&j).map_err(|e| GgufError::Tokenizer {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        crate::loading::parse_tokenizer(&s).map_err(|message| GgufError::Tokenizer {
            path: self.path.clone(),
            message,
        })
    }

    /// `tokenizer.chat_template`, when present.
    pub fn chat_template(&self) -> Result<Option<String>, GgufError> {
        Ok(self.opt_string("tokenizer.chat_template")?.map(str::to_string))
    }

    /// A `tokenizer_config.json` value: the special tokens' strings, `add_bos_token`,
    /// `add_eos_token`, and the chat template when present.
    pub fn tokenizer_config(&self) -> Result<Json, GgufError> {
        let tokens = self.string_array("tokenizer.ggml.tokens")?;
        let mut cfg = Map::new();
        for (key, name) in [
            ("tokenizer.ggml.bos_token_id", "bos_token"),
            ("tokenizer.ggml.eos_token_id", "eos_token"),
            ("tokenizer.ggml.unknown_token_id", "unk_token"),
            ("tokenizer.ggml.padding_token_id", "pad_token"),
        ] {
            if let Some(id) = self.opt_usize(key)? {
                let t = tokens.get(id).ok_or_else(|| {
                    self.bad(
                        key,
                        format!("id {id} is outside the vocabulary of {}", tokens.len()),
                    )
                })?;
                cfg.insert(name.to_string(), json!(t));
            }
        }
        for (key, name) in [
            ("tokenizer.ggml.add_bos_token", "add_bos_token"),
            ("tokenizer.ggml.add_eos_token", "add_eos_token"),
        ] {
            if let Some(v) = self.content.metadata.get(key) {
                let Value::Bool(b) = v else {
                    return Err(self.bad(key, format!("expected true or false, got {}", describe(v))));
                };
                cfg.insert(name.to_string(), json!(*b));
            }
        }
        if let Some(t) = self.chat_template()? {
            cfg.insert("chat_template".into(), json!(t));
        }
        Ok(Json::Object(cfg))
    }
}

fn added_token(id: usize, content: &str, special: bool) -> Json {
    json!({
        "id": id, "content": content, "single_word": false, "lstrip": false,
        "rstrip": false, "normalized": false, "special": special
    })
}

/// GPT-2's byte-to-unicode table: the character that spells each byte.
fn byte_alphabet() -> Vec<char> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32).collect();
    printable.extend(0xA1..=0xAC);
    printable.extend(0xAE..=0xFF);
    let mut table = vec!['\0'; 256];
    let mut n = 0;
    for b in 0..256u32 {
        let c = if printable.contains(&b) {
            b
        } else {
            n += 1;
            255 + n
        };
        table[b as usize] = char::from_u32(c).unwrap_or('\u{FFFD}');
    }
    table
}

const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GPT4O_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The split regex transformers uses for a `tokenizer.ggml.pre` value; `None` means
/// GPT-2's ByteLevel regex (as for SmolLM2's `smollm`).
fn split_regex_for(pre: &str) -> Option<&'static str> {
    match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0" | "lfm2"
        | "jina-v5-nano" | "dbrx" | "smaug-bpe" => Some(LLAMA3_SPLIT),
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" => Some(QWEN2_SPLIT),
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => Some(GPT4O_SPLIT),
        _ => None,
    }
}
