//! The results directory: `run.json` (the manifest) and the results file, one JSON line
//! per finished item.
//!
//! - **Appending.** A finished item's line is written with one `write` of the whole line
//!   and its newline to a file opened with `O_APPEND`, then flushed to disk (`fsync`), so
//!   a crash or kill loses at most the item in flight.
//! - **Resuming.** [`ResultsStore::open`] with `resume` reads what is there: a torn last
//!   line (no newline, or not a JSON record) is reported and cut off (the file is
//!   truncated to the last good line); a damaged line elsewhere is an error. Items already
//!   present are skipped by the runner.
//! - **Configuration.** `run.json` records the run's configuration and plan
//!   ([`Manifest`]). Without `resume`, a non-empty directory is an error; with it, a
//!   configuration or plan that differs from the recorded one is an error naming the
//!   first differing field.
//! - **Files.** `results.jsonl` for a whole run, `results-shard-I-of-N.jsonl` for shard
//!   `I/N`; `summary.md`, `summary.json` and `plots/` are written by [`crate::summary`].

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{EvalError, Result};
use crate::plan::{ItemKey, Shard};
use crate::record::Record;

/// The manifest's file name.
pub const MANIFEST: &str = "run.json";

/// The version of the manifest and line formats.
pub const FORMAT: u32 = 1;

/// The results file of a run or shard.
///
/// ```
/// use latentevo_eval::{results_file_name, Shard};
/// assert_eq!(results_file_name(None), "results.jsonl");
/// assert_eq!(results_file_name(Some(Shard { index: 1, count: 3 })), "results-shard-1-of-3.jsonl");
/// ```
pub fn results_file_name(shard: Option<Shard>) -> String {
    match shard {
        None => "results.jsonl".to_string(),
        Some(s) => format!("results-shard-{}-of-{}.jsonl", s.index, s.count),
    }
}

/// `run.json`: what a results directory holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: u32,
    /// The latentevo version that wrote it.
    pub version: String,
    /// Everything an item's result depends on: model, embedder, device, dtype, budget,
    /// population, K, tokens, seed, the distinct-ideas threshold and the default search
    /// settings.
    pub configuration: Value,
    /// The prompt sets (name, file, count, fingerprint), `--limit`, and the methods (label,
    /// kind, overrides, full settings).
    pub plan: Value,
    /// The shard this directory holds, if it is one.
    pub shard: Option<Shard>,
    /// Items this directory is to hold.
    pub items: usize,
    /// The results file's name.
    pub results: String,
    /// For a merged directory: the directories merged, in shard order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_from: Option<Vec<String>>,
    /// Prompt lines that were skipped or had ignored keys.
    #[serde(default)]
    pub prompt_problems: Vec<String>,
    /// The command line that started the run (not compared on resume).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
}

impl Manifest {
    /// Reads `DIR/run.json`.
    ///
    /// # Errors
    ///
    /// [`EvalError::Io`] or [`EvalError::Json`].
    pub fn read(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(|e| EvalError::io(&path, e))?;
        serde_json::from_str(&text).map_err(|source| EvalError::Json { path, source })
    }

    /// Writes `DIR/run.json` atomically.
    ///
    /// # Errors
    ///
    /// [`EvalError::Io`].
    pub fn write(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|source| EvalError::Json {
            path: dir.join(MANIFEST),
            source,
        })?;
        write_atomically(&dir.join(MANIFEST), format!("{text}\n").as_bytes())
    }

    /// The first field, as a dotted path, where this manifest's configuration, plan or
    /// shard differ from `other`'s, with both values (JSON), or `None` when they match.
    pub fn difference(&self, other: &Manifest) -> Option<(String, String, String)> {
        let a = serde_json::json!({"format": self.format, "configuration": self.configuration, "plan": self.plan, "shard": self.shard});
        let b = serde_json::json!({"format": other.format, "configuration": other.configuration, "plan": other.plan, "shard": other.shard});
        first_difference(&a, &b, String::new())
    }

    /// The same manifest without its shard: what every shard of one run shares.
    pub fn unsharded(&self) -> Manifest {
        Manifest {
            shard: None,
            merged_from: None,
            results: results_file_name(None),
            ..self.clone()
        }
    }
}

/// The first differing path of two JSON values, with both values.
pub(crate) fn first_difference(a: &Value, b: &Value, path: String) -> Option<(String, String, String)> {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            // Plain fields before nested objects: `configuration.seed` rather than
            // `configuration.defaults.seed`.
            let nested =
                |k: &String| x.get(k).is_some_and(Value::is_object) || y.get(k).is_some_and(Value::is_object);
            keys.sort_by_key(|k| nested(k));
            for k in keys {
                let (va, vb) = (x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null));
                if let Some(d) = first_difference(va, vb, join(k)) {
                    return Some(d);
                }
            }
            None
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (va, vb))| first_difference(va, vb, format!("{path}[{i}]"))),
        _ if a == b => None,
        _ => Some((path, a.to_string(), b.to_string())),
    }
}

/// Writes a file through a temporary file in its directory, renamed into place.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| EvalError::io(path, e))?;
    tmp.write_all(bytes).map_err(|e| EvalError::io(path, e))?;
    tmp.as_file().sync_all().map_err(|e| EvalError::io(path, e))?;
    tmp.persist(path).map_err(|e| EvalError::io(path, e.error))?;
    Ok(())
}

/// A line of a results file: its key, its text (without the newline) and its record.
#[derive(Debug, Clone)]
pub struct Line {
    /// The item's key.
    pub key: ItemKey,
    /// The line as written.
    pub text: String,
    /// The parsed record.
    pub record: Record,
    /// Its 1-based line number.
    pub number: usize,
}

/// What reading a results file found.
#[derive(Debug, Clone)]
pub struct ReadResults {
    /// The good lines.
    pub lines: Vec<Line>,
    /// A torn last line (its number and a description), if there was one.
    pub torn: Option<(usize, String)>,
    /// The byte length of the good part.
    pub good_len: u64,
}

/// Reads a results file; a missing file reads as empty.
///
/// # Errors
///
/// [`EvalError::Results`] for a damaged line other than the last, or a duplicated item.
pub fn read_results(path: &Path) -> Result<ReadResults> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes).map_err(|e| EvalError::io(path, e))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(EvalError::io(path, e)),
    }
    let mut lines = Vec::new();
    let mut seen: HashSet<ItemKey> = HashSet::new();
    let mut offset = 0usize;
    let mut number = 0usize;
    let mut torn = None;
    while offset < bytes.len() {
        number += 1;
        let end = bytes[offset..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|p| offset + p);
        let raw = &bytes[offset..end.unwrap_or(bytes.len())];
        let parsed = std::str::from_utf8(raw)
            .map_err(|e| format!("not UTF-8 ({e})"))
            .and_then(|t| {
                serde_json::from_str::<Record>(t)
                    .map(|r| (t.to_string(), r))
                    .map_err(|e| format!("not a results record ({e})"))
            });
        let last = end.is_none_or(|e| e + 1 == bytes.len());
        match (parsed, end) {
            (Ok((text, record)), Some(e)) => {
                let key = record.key();
                if !seen.insert(key.clone()) {
                    return Err(EvalError::Results {
                        path: path.to_path_buf(),
                        line: number,
                        message: format!("item `{key}` appears twice"),
                    });
                }
                lines.push(Line {
                    key,
                    text,
                    record,
                    number,
                });
                offset = e + 1;
            }
            (Ok(_), None) => {
                torn = Some((
                    number,
                    "the last line has no newline (a write cut short)".to_string(),
                ));
                break;
            }
            (Err(m), _) if last => {
                torn = Some((number, m));
                break;
            }
            (Err(message), _) => {
                return Err(EvalError::Results {
                    path: path.to_path_buf(),
                    line: number,
                    message,
                })
            }
        }
    }
    Ok(ReadResults {
        lines,
        torn,
        good_len: offset as u64,
    })
}

/// The results file of a run, open for appending.
#[derive(Debug)]
pub struct ResultsStore {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    done: HashSet<ItemKey>,
    notes: Vec<String>,
}

impl ResultsStore {
    /// Opens (creating it if needed) the results directory `dir` for the run described
    /// by `manifest` (see the module docs for what `resume` changes).
    ///
    /// # Errors
    ///
    /// [`EvalError::DirNotEmpty`], [`EvalError::ConfigMismatch`], [`EvalError::Results`],
    /// [`EvalError::Io`].
    pub fn open(dir: &Path, manifest: &Manifest, resume: bool) -> Result<ResultsStore> {
        std::fs::create_dir_all(dir).map_err(|e| EvalError::io(dir, e))?;
        let non_empty = std::fs::read_dir(dir)
            .map_err(|e| EvalError::io(dir, e))?
            .next()
            .is_some();
        let manifest_path = dir.join(MANIFEST);
        if non_empty && !resume {
            return Err(EvalError::DirNotEmpty {
                dir: dir.to_path_buf(),
            });
        }
        if manifest_path.exists() {
            let recorded = Manifest::read(dir)?;
            if let Some((field, recorded, current)) = recorded.difference(manifest) {
                return Err(EvalError::ConfigMismatch {
                    manifest: manifest_path,
                    field,
                    recorded,
                    current,
                });
            }
        } else {
            manifest.write(dir)?;
        }
        let path = dir.join(&manifest.results);
        let read = read_results(&path)?;
        let mut notes = Vec::new();
        if let Some((line, why)) = &read.torn {
            notes.push(format!(
                "{}:{line}: {why}; dropped (that item runs again)",
                path.display()
            ));
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| EvalError::io(&path, e))?;
            f.set_len(read.good_len).map_err(|e| EvalError::io(&path, e))?;
            f.sync_all().map_err(|e| EvalError::io(&path, e))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| EvalError::io(&path, e))?;
        // The directory entry of a new file reaches the disk too.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(ResultsStore {
            dir: dir.to_path_buf(),
            path,
            file,
            done: read.lines.into_iter().map(|l| l.key).collect(),
            notes,
        })
    }

    /// Whether an item's line is already there.
    pub fn is_done(&self, key: &ItemKey) -> bool {
        self.done.contains(key)
    }

    /// Items already there.
    pub fn done(&self) -> usize {
        self.done.len()
    }

    /// What opening found worth telling (a torn last line that was dropped).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The results directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The results file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends a record's line: one write of the line and its newline, then `fsync`.
    ///
    /// # Errors
    ///
    /// [`EvalError::Io`] or [`EvalError::Json`].
    pub fn append(&mut self, record: &Record) -> Result<()> {
        let mut line = serde_json::to_string(record).map_err(|source| EvalError::Json {
            path: self.path.clone(),
            source,
        })?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|_| self.file.flush())
            .and_then(|_| self.file.sync_data())
            .map_err(|e| EvalError::io(&self.path, e))?;
        self.done.insert(record.key());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_damaged_line_before_the_last_is_an_error_and_a_torn_last_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        std::fs::write(&path, "{\"set\": 1}\n{\"set\"").unwrap();
        let e = read_results(&path).unwrap_err().to_string();
        assert!(e.contains("r.jsonl:1: not a results record"), "{e}");
        std::fs::write(&path, "{\"set\"").unwrap();
        let r = read_results(&path).unwrap();
        assert_eq!((r.lines.len(), r.good_len), (0, 0));
        assert_eq!(r.torn.unwrap().0, 1);
        assert!(read_results(&dir.path().join("missing.jsonl"))
            .unwrap()
            .lines
            .is_empty());
    }

    #[test]
    fn differences_are_named_by_path() {
        let a = json!({"configuration": {"budget": 32, "seed": 0}, "plan": {"methods": [{"label": "x"}]}});
        let b = json!({"configuration": {"budget": 64, "seed": 0}, "plan": {"methods": [{"label": "x"}]}});
        let c = json!({"configuration": {"budget": 32, "seed": 0}, "plan": {"methods": [{"label": "y"}]}});
        assert_eq!(
            first_difference(&a, &b, String::new()),
            Some(("configuration.budget".into(), "32".into(), "64".into()))
        );
        assert_eq!(
            first_difference(&a, &c, String::new()).unwrap().0,
            "plan.methods[0].label"
        );
        assert_eq!(first_difference(&a, &a, String::new()), None);
    }
}
