//! Prompt sets: JSONL files, one prompt a line.
//!
//! Each non-blank line is a JSON object with
//!
//! - `id`: a non-empty string, unique in the file (the item key and the seed derive from
//!   it, so keep it stable when editing the set);
//! - `prompt`: a non-empty string, sent through the model's chat template;
//! - `reward` (optional): a reward spec in the syntax of `--reward`, used for this prompt
//!   instead of the run's default.
//!
//! Other keys are allowed (e.g. `category`) and reported as ignored. A line that is not
//! such an object (bad JSON, a missing or empty `id` or `prompt`, a reward that does not
//! parse) is reported with its file and line number and skipped; the rest of the set is
//! used. Two lines with the same `id` are an error naming both lines. The set's name is
//! the file's stem (`prompts/ideas.jsonl` is the set `ideas`).
//!
//! ```
//! use latentevo_eval::PromptSet;
//! let text = "{\"id\": \"a\", \"prompt\": \"Ten uses for a brick.\"}\n\
//!             not json\n\
//!             {\"id\": \"b\", \"prompt\": \"Name 10 unrelated nouns.\", \"reward\": \"dat + 0.1*fluency\"}\n";
//! let set = PromptSet::parse("demo", "demo.jsonl".as_ref(), text)?;
//! assert_eq!(set.prompts.len(), 2);
//! assert_eq!(set.problems.len(), 1);
//! assert_eq!(set.problems[0].line, 2);
//! assert!(set.problems[0].to_string().starts_with("demo.jsonl:2: "));
//! assert_eq!(set.prompts[1].reward.as_ref().unwrap().to_string(), "dat + 0.1*fluency");
//! # Ok::<(), latentevo_eval::EvalError>(())
//! ```

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use latentevo_reward::RewardSpec;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{EvalError, Result};

/// One prompt of a set.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    /// Its id, unique in the set.
    pub id: String,
    /// The prompt text.
    pub prompt: String,
    /// Its own reward, if the line gives one.
    pub reward: Option<RewardSpec>,
    /// The 1-based line it came from.
    pub line: usize,
}

/// A line that was skipped (or a key that was ignored), with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineProblem {
    /// The prompt file.
    pub path: PathBuf,
    /// The 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
    /// Whether the line was skipped (else only something in it was ignored).
    pub skipped: bool,
}

impl fmt::Display for LineProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.path.display(), self.line, self.message)?;
        if self.skipped {
            write!(f, "; line skipped")?;
        }
        Ok(())
    }
}

/// A prompt set read from a JSONL file (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct PromptSet {
    /// The set's name: the file's stem.
    pub name: String,
    /// The file.
    pub path: PathBuf,
    /// The usable prompts, in file order.
    pub prompts: Vec<Prompt>,
    /// Lines skipped and keys ignored.
    pub problems: Vec<LineProblem>,
}

impl PromptSet {
    /// Reads a prompt set from a file.
    ///
    /// # Errors
    ///
    /// [`EvalError::PromptSet`] when the file cannot be read, has no usable prompt, or has
    /// a duplicate id.
    pub fn load(path: &Path) -> Result<PromptSet> {
        let text = std::fs::read_to_string(path).map_err(|e| EvalError::PromptSet {
            path: path.to_path_buf(),
            message: format!("cannot read the prompt set: {e}"),
        })?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| EvalError::PromptSet {
                path: path.to_path_buf(),
                message: "the file has no name to call the set by".into(),
            })?;
        PromptSet::parse(&name, path, &text)
    }

    /// Parses a prompt set from its text; `path` names it in messages.
    ///
    /// # Errors
    ///
    /// As [`PromptSet::load`].
    pub fn parse(name: &str, path: &Path, text: &str) -> Result<PromptSet> {
        let mut prompts: Vec<Prompt> = Vec::new();
        let mut problems = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            if raw.trim().is_empty() {
                continue;
            }
            let problem = |message: String, skipped: bool| LineProblem {
                path: path.to_path_buf(),
                line,
                message,
                skipped,
            };
            match parse_line(raw, line) {
                Ok((prompt, ignored)) => {
                    if let Some(first) = seen.get(&prompt.id) {
                        return Err(EvalError::PromptSet {
                            path: path.to_path_buf(),
                            message: format!(
                                "duplicate id `{}` on lines {first} and {line} (ids must be unique in a set)",
                                prompt.id
                            ),
                        });
                    }
                    seen.insert(prompt.id.clone(), line);
                    for key in ignored {
                        problems.push(problem(format!("unknown key `{key}` ignored"), false));
                    }
                    prompts.push(prompt);
                }
                Err(message) => problems.push(problem(message, true)),
            }
        }
        if prompts.is_empty() {
            return Err(EvalError::PromptSet {
                path: path.to_path_buf(),
                message: match problems.iter().filter(|p| p.skipped).count() {
                    0 => "no prompts in the file".to_string(),
                    n => format!(
                        "no usable prompt ({n} malformed lines, the first: {})",
                        problems[0]
                    ),
                },
            });
        }
        Ok(PromptSet {
            name: name.to_string(),
            path: path.to_path_buf(),
            prompts,
            problems,
        })
    }

    /// Keeps the first `limit` prompts.
    pub fn truncate(&mut self, limit: usize) {
        self.prompts.truncate(limit);
    }

    /// A SHA-256 fingerprint of the prompts used (ids, texts and rewards, in order): two
    /// runs over sets with equal fingerprints asked the same questions.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        for p in &self.prompts {
            let reward = p.reward.as_ref().map(|r| r.to_string()).unwrap_or_default();
            for field in [p.id.as_str(), p.prompt.as_str(), reward.as_str()] {
                h.update((field.len() as u64).to_le_bytes());
                h.update(field.as_bytes());
            }
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// One line: the prompt and the unknown keys it has, or why it is unusable.
fn parse_line(raw: &str, line: usize) -> std::result::Result<(Prompt, Vec<String>), String> {
    let value: Value = serde_json::from_str(raw).map_err(|e| format!("not valid JSON ({e})"))?;
    let Value::Object(map) = value else {
        return Err("not a JSON object (expected {\"id\": ..., \"prompt\": ...})".into());
    };
    let string = |key: &str| -> std::result::Result<Option<String>, String> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(format!("`{key}` must be a string, got {other}")),
        }
    };
    let id = string("id")?
        .filter(|s| !s.trim().is_empty())
        .ok_or("`id` is missing or empty")?;
    let prompt = string("prompt")?
        .filter(|s| !s.trim().is_empty())
        .ok_or("`prompt` is missing or empty")?;
    let reward = match string("reward")? {
        None => None,
        Some(text) => Some(
            text.parse::<RewardSpec>()
                .map_err(|e| format!("`reward` does not parse: {e}"))?,
        ),
    };
    let ignored = map
        .keys()
        .filter(|k| !["id", "prompt", "reward"].contains(&k.as_str()))
        .cloned()
        .collect();
    Ok((
        Prompt {
            id,
            prompt,
            reward,
            line,
        },
        ignored,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PromptSet> {
        PromptSet::parse("t", Path::new("t.jsonl"), text)
    }

    #[test]
    fn malformed_lines_are_reported_with_their_number_and_skipped() {
        let text = r#"{"id": "a", "prompt": "one"}
{"id": "b", "prompt": "two"
[1, 2]

{"id": "", "prompt": "empty id"}
{"id": "c"}
{"id": 7, "prompt": "numeric id"}
{"id": "d", "prompt": "bad reward", "reward": "novelty + nonsense"}
{"id": "e", "prompt": "five", "category": "x"}
"#;
        let set = parse(text).unwrap();
        let ids: Vec<&str> = set.prompts.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["a", "e"]);
        let lines: Vec<(usize, bool)> = set.problems.iter().map(|p| (p.line, p.skipped)).collect();
        assert_eq!(
            lines,
            [
                (2, true),
                (3, true),
                (5, true),
                (6, true),
                (7, true),
                (8, true),
                (9, false)
            ]
        );
        assert!(set.problems[0]
            .to_string()
            .starts_with("t.jsonl:2: not valid JSON"));
        assert!(
            set.problems[5].message.contains("nonsense"),
            "{}",
            set.problems[5]
        );
        assert!(set.problems[6].to_string().contains("`category` ignored"));
        assert_eq!(set.prompts[1].line, 9);
    }

    #[test]
    fn duplicate_ids_name_both_lines() {
        let text = "{\"id\": \"a\", \"prompt\": \"x\"}\n{\"id\": \"b\", \"prompt\": \"y\"}\n{\"id\": \"a\", \"prompt\": \"z\"}\n";
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains("duplicate id `a` on lines 1 and 3"), "{err}");
    }

    #[test]
    fn a_set_without_prompts_is_an_error() {
        assert!(parse("\n\n").unwrap_err().to_string().contains("no prompts"));
        let err = parse("nope\n").unwrap_err().to_string();
        assert!(err.contains("no usable prompt") && err.contains(":1:"), "{err}");
    }

    #[test]
    fn the_fingerprint_follows_the_content() {
        let a = parse("{\"id\": \"a\", \"prompt\": \"x\"}\n").unwrap();
        let b = parse("{\"id\": \"a\", \"prompt\": \"y\"}\n").unwrap();
        let a2 = parse("\n{\"id\":\"a\",\"prompt\":\"x\",\"note\":1}\n").unwrap();
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint(), a2.fingerprint());
        assert_eq!(a.fingerprint().len(), 64);
    }
}
