//! Reading results directories back, and merging shards into one.
//!
//! [`merge`] takes the directories of the shards of one run (each written with
//! `--shard I/N`), checks that they share one configuration and plan, that every shard
//! `0..N` is there exactly once, finished, and that every item of the plan is present
//! exactly once in the shard it belongs to; then writes into a new directory the
//! `run.json` and `results.jsonl` an unsharded run would have written (the lines copied
//! byte for byte, in the plan's order) and the summary.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{EvalError, Result};
use crate::plan::{ItemKey, Shard};
use crate::record::Record;
use crate::store::{read_results, write_atomically, Manifest, MANIFEST};
use crate::summary::{write_summary, Summary, SummaryOptions};

/// The items a manifest's plan lists, in the plan's order.
pub fn planned_items(manifest: &Manifest) -> Vec<ItemKey> {
    let plan = &manifest.plan;
    let methods: Vec<&str> = plan
        .get("methods")
        .and_then(Value::as_array)
        .map(|l| l.iter().filter_map(|m| m.get("label")?.as_str()).collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    for set in plan.get("sets").and_then(Value::as_array).into_iter().flatten() {
        let name = set.get("name").and_then(Value::as_str).unwrap_or_default();
        for id in set.get("ids").and_then(Value::as_array).into_iter().flatten() {
            for m in &methods {
                out.push(ItemKey {
                    set: name.to_string(),
                    prompt_id: id.as_str().unwrap_or_default().to_string(),
                    method: m.to_string(),
                });
            }
        }
    }
    out
}

/// A results directory read back: its manifest, its records (in file order) and notes
/// (a torn last line that was left out).
#[derive(Debug, Clone)]
pub struct ResultsDir {
    /// `run.json`.
    pub manifest: Manifest,
    /// The records.
    pub records: Vec<Record>,
    /// The raw lines, as written.
    pub lines: Vec<String>,
    /// What is worth telling (a torn last line, left out).
    pub notes: Vec<String>,
}

/// Reads a results directory (`run.json` and its results file). A torn last line (a run
/// in progress, or killed) is left out and noted.
///
/// # Errors
///
/// [`EvalError::Io`], [`EvalError::Json`], [`EvalError::Results`].
pub fn read_dir(dir: &Path) -> Result<ResultsDir> {
    let manifest = Manifest::read(dir)?;
    let path = dir.join(&manifest.results);
    let read = read_results(&path)?;
    let notes = read
        .torn
        .iter()
        .map(|(line, why)| format!("{}:{line}: {why}; left out", path.display()))
        .collect();
    Ok(ResultsDir {
        manifest,
        lines: read.lines.iter().map(|l| l.text.clone()).collect(),
        records: read.lines.into_iter().map(|l| l.record).collect(),
        notes,
    })
}

/// Regenerates the summary of a results directory (`summary.md`, `summary.json`,
/// `plots/`) from its lines.
///
/// # Errors
///
/// As [`read_dir`] and [`write_summary`].
pub fn summarize_dir(dir: &Path, options: SummaryOptions) -> Result<(Summary, Vec<String>)> {
    let r = read_dir(dir)?;
    let summary = write_summary(dir, &r.manifest, &r.records, options)?;
    Ok((summary, r.notes))
}

/// Merges shard directories into `out` (see the module docs) and writes its summary.
///
/// # Errors
///
/// [`EvalError::Merge`] naming the problem: shards of different runs (and the differing
/// field), a missing or repeated shard, an unfinished shard, a missing or duplicated
/// item, an output directory that holds anything.
pub fn merge(dirs: &[PathBuf], out: &Path, options: SummaryOptions) -> Result<Summary> {
    if dirs.is_empty() {
        return Err(EvalError::Merge("no shard directories given".into()));
    }
    let mut shards: Vec<(PathBuf, ResultsDir, Shard)> = Vec::new();
    for d in dirs {
        let r = read_dir(d)?;
        let Some(shard) = r.manifest.shard else {
            return Err(EvalError::Merge(format!(
                "{} holds a whole run, not a shard (it has no `shard` in {MANIFEST})",
                d.display()
            )));
        };
        if let Some(note) = r.notes.first() {
            return Err(EvalError::Merge(format!(
                "shard {shard} in {} is unfinished ({note}): run it again with --resume first",
                d.display()
            )));
        }
        shards.push((d.clone(), r, shard));
    }
    let base = shards[0].1.manifest.unsharded();
    for (d, r, _) in &shards[1..] {
        if let Some((field, a, b)) = base.difference(&r.manifest.unsharded()) {
            return Err(EvalError::Merge(format!(
                "{} and {} are not shards of one run: `{field}` is {a} in the first and {b} in the second",
                shards[0].0.display(),
                d.display()
            )));
        }
    }
    let count = shards[0].2.count;
    let mut by_index: Vec<Option<&PathBuf>> = vec![None; count];
    for (d, _, s) in &shards {
        if s.count != count {
            return Err(EvalError::Merge(format!(
                "{} is shard {s} but {} is shard {} (all shards must split the run into the same number)",
                d.display(),
                shards[0].0.display(),
                shards[0].2
            )));
        }
        if let Some(other) = by_index[s.index] {
            return Err(EvalError::Merge(format!(
                "shard {s} is given twice: {} and {}",
                other.display(),
                d.display()
            )));
        }
        by_index[s.index] = Some(d);
    }
    if let Some(missing) = by_index.iter().position(Option::is_none) {
        return Err(EvalError::Merge(format!(
            "shard {missing}/{count} is missing (give every shard's directory)"
        )));
    }
    // Every planned item once, in the shard it belongs to.
    let planned = planned_items(&base);
    let index: HashMap<&ItemKey, usize> = planned.iter().enumerate().map(|(i, k)| (k, i)).collect();
    let mut found: HashMap<&ItemKey, (usize, &str, &Record)> = HashMap::new();
    for (si, (d, r, s)) in shards.iter().enumerate() {
        for (line, record) in r.lines.iter().zip(&r.records) {
            let key = index.get(&record.key()).map(|&i| &planned[i]).ok_or_else(|| {
                EvalError::Merge(format!(
                    "{} (shard {s}) has item `{}`, which the run's plan does not list",
                    d.display(),
                    record.key()
                ))
            })?;
            if let Some((other, _, _)) = found.get(key) {
                return Err(EvalError::Merge(format!(
                    "item `{key}` is in both {} and {}",
                    shards[*other].0.display(),
                    d.display()
                )));
            }
            found.insert(key, (si, line.as_str(), record));
        }
    }
    let mut text = String::new();
    let mut records = Vec::new();
    for (position, key) in planned.iter().enumerate() {
        let Some((si, line, record)) = found.get(key) else {
            let owner = position % count;
            return Err(EvalError::Merge(format!(
                "item `{key}` is missing: it belongs to shard {owner}/{count} ({}); run that shard again with --resume",
                by_index[owner].map(|p| p.display().to_string()).unwrap_or_default()
            )));
        };
        let expected = position % count;
        if shards[*si].2.index != expected {
            return Err(EvalError::Merge(format!(
                "item `{key}` is in shard {} ({}) but belongs to shard {expected}/{count}",
                shards[*si].2,
                shards[*si].0.display()
            )));
        }
        text.push_str(line);
        text.push('\n');
        records.push((*record).clone());
    }
    std::fs::create_dir_all(out).map_err(|e| EvalError::io(out, e))?;
    if std::fs::read_dir(out)
        .map_err(|e| EvalError::io(out, e))?
        .next()
        .is_some()
    {
        return Err(EvalError::Merge(format!(
            "the output directory {} is not empty: pick a new --out",
            out.display()
        )));
    }
    let mut manifest = base;
    manifest.items = planned.len();
    manifest.command = None;
    manifest.merged_from = Some(
        by_index
            .iter()
            .flatten()
            .map(|p| p.display().to_string())
            .collect(),
    );
    manifest.write(out)?;
    write_atomically(&out.join(&manifest.results), text.as_bytes())?;
    write_summary(out, &manifest, &records, options)
}
