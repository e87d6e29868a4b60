//! Running items through the engine and recording them.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use latentevo_engine::{Engine, SearchResult};
use latentevo_reward::degeneracy;

use crate::error::{EvalError, Result};
use crate::method::MethodKind;
use crate::metrics::{idea_metrics, pool_metrics};
use crate::plan::{Item, ItemKey, Plan, Shard};
use crate::record::{BudgetRecord, IdeaRecord, Record, ScaleRecord, TimingRecord};
use crate::store::ResultsStore;

/// Told how a run goes (a progress bar, a log). Every method has an empty default.
pub trait Observer {
    /// Before the first item: items to run now, items already done, and the
    /// continuations the items to run will generate.
    fn planned(&mut self, _to_run: usize, _done: usize, _continuations: usize) {}
    /// An item starts (`n` of `of`, 1-based).
    fn item_started(&mut self, _n: usize, _of: usize, _key: &ItemKey, _rounds: usize) {}
    /// A round of the current item finished, with `population` continuations.
    fn round_finished(&mut self, _key: &ItemKey, _round: usize, _rounds: usize, _population: usize) {}
    /// An item finished and its line was written.
    fn item_finished(&mut self, _record: &Record) {}
}

/// An observer that does nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Quiet;
impl Observer for Quiet {}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunReport {
    /// Items run and written now.
    pub ran: usize,
    /// Items skipped because their line was already there.
    pub skipped: usize,
    /// Whether the run stopped because `stop` was set (the item in flight, if any, was
    /// abandoned or completed; nothing partial was written).
    pub interrupted: bool,
}

/// Runs one item: the search, then the metrics. Returns `None` when `stop` was set
/// during the search and it ended early (the item is abandoned).
///
/// # Errors
///
/// [`EvalError::Engine`] if the search fails; [`EvalError::Reward`] if embedding fails.
pub fn run_item(
    engine: &Engine,
    plan: &Plan,
    item: &Item,
    observer: &mut dyn Observer,
    stop: Option<&AtomicBool>,
) -> Result<Option<Record>> {
    let started = Instant::now();
    let cfg = plan.item_config(item);
    let prompt = plan.prompt(item);
    let method = &plan.methods[item.method];
    let key = &item.key;
    let mut on_round = |r: &latentevo_engine::RoundReport| {
        observer.round_finished(key, r.stats.round, r.rounds, r.candidates.len());
        if stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    let result = engine
        .run(&prompt.prompt, &cfg, &mut on_round)
        .map_err(|source| EvalError::Engine {
            item: key.to_string(),
            source: Box::new(source),
        })?;
    if result.stopped_early {
        return Ok(None);
    }
    let threshold = plan.settings.distinct_threshold;
    let record = record(engine, plan, item, method.spec.kind, &result, threshold, started)?;
    Ok(Some(record))
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

fn record(
    engine: &Engine,
    plan: &Plan,
    item: &Item,
    kind: MethodKind,
    result: &SearchResult,
    threshold: f64,
    started: Instant,
) -> Result<Record> {
    let method = &plan.methods[item.method];
    let candidates = &result.candidates;
    // Every candidate and the greedy answer, embedded once.
    let mut texts: Vec<&str> = candidates.iter().map(|c| c.text.as_str()).collect();
    texts.push(result.reference.as_str());
    let mut embeddings = engine.embedder().embed(&texts)?;
    let reference_embedding = embeddings.pop();
    let find = |round: usize, index: usize| {
        candidates
            .iter()
            .position(|c| c.round == round && c.index == index)
    };
    // The K ideas as (candidate index, reward): `sample` takes the first K as they came;
    // every other method the engine's selection.
    let chosen: Vec<(usize, Option<f64>)> = if kind == MethodKind::Sample {
        (0..candidates.len().min(result.config.ideas))
            .map(|i| {
                let c = &candidates[i];
                (i, c.reward.filter(|r| r.is_finite() && c.masked.is_none()))
            })
            .collect()
    } else {
        result
            .ideas
            .iter()
            .filter_map(|idea| find(idea.round, idea.index).map(|i| (i, finite(idea.reward))))
            .collect()
    };
    let ideas: Vec<IdeaRecord> = chosen
        .iter()
        .map(|&(i, reward)| {
            let c = &candidates[i];
            IdeaRecord {
                text: c.text.clone(),
                reward,
                terms: c.terms.clone(),
                fluency: finite(c.fluency),
                kl: finite(c.kl),
                masked: c.masked.clone(),
                round: c.round,
                index: c.index,
            }
        })
        .collect();
    let masked = candidates.iter().filter(|c| c.masked.is_some()).count();
    let masked_share = if candidates.is_empty() {
        0.0
    } else {
        masked as f64 / candidates.len() as f64
    };
    let idea_texts: Vec<&str> = chosen.iter().map(|&(i, _)| candidates[i].text.as_str()).collect();
    let idea_embeddings: Vec<Vec<f32>> = chosen.iter().map(|&(i, _)| embeddings[i].clone()).collect();
    let metrics = idea_metrics(
        &idea_texts,
        &idea_embeddings,
        &chosen.iter().map(|&(_, r)| r).collect::<Vec<_>>(),
        &chosen
            .iter()
            .map(|&(i, _)| candidates[i].fluency)
            .collect::<Vec<_>>(),
        &chosen.iter().map(|&(i, _)| candidates[i].kl).collect::<Vec<_>>(),
        reference_embedding.as_deref(),
        threshold,
        masked_share,
    );
    let kept: Vec<usize> = (0..candidates.len())
        .filter(|&i| candidates[i].masked.is_none())
        .collect();
    let degenerate = candidates
        .iter()
        .filter(|c| degeneracy(&c.text).is_some())
        .count();
    let pool = pool_metrics(
        &kept.iter().map(|&i| embeddings[i].clone()).collect::<Vec<_>>(),
        &kept.iter().map(|&i| candidates[i].fluency).collect::<Vec<_>>(),
        candidates.len(),
        degenerate,
        threshold,
    );
    let cfg = &result.config;
    Ok(Record {
        set: item.key.set.clone(),
        prompt_id: item.key.prompt_id.clone(),
        method: item.key.method.clone(),
        prompt: result.prompt.clone(),
        seed: cfg.seed,
        method_spec: serde_json::json!({"kind": method.spec.kind, "overrides": method.spec.overrides}),
        config: serde_json::to_value(cfg).unwrap_or_default(),
        reference: result.reference.clone(),
        calibration: ScaleRecord {
            target_kl: result.calibration.target_kl,
            scale: result.calibration.scale,
            achieved_kl: finite(result.calibration.achieved_kl),
        },
        budget: BudgetRecord {
            continuations: candidates.len(),
            rounds: result.rounds.len(),
            population: cfg.population,
            tokens: candidates.iter().map(|c| c.tokens).sum(),
        },
        ideas,
        metrics,
        pool,
        warnings: result.warnings.clone(),
        timing: TimingRecord {
            search_seconds: result.seconds,
            item_seconds: started.elapsed().as_secs_f64(),
            calibration_evaluations: result.calibration.evaluations,
            calibration_cached: result.calibration.cached,
        },
    })
}

/// Runs the items of `shard` (all for `None`) that `store` does not hold yet, appending
/// each line as soon as its item finishes. When `stop` is set, the item in flight is
/// abandoned at its next round (or completes, if that was its last) and the run returns
/// with `interrupted`.
///
/// # Errors
///
/// The first item that fails ends the run with its error; the lines written before it
/// stay (resume continues after them).
pub fn run(
    engine: &Engine,
    plan: &Plan,
    shard: Option<Shard>,
    store: &mut ResultsStore,
    observer: &mut dyn Observer,
    stop: Option<&AtomicBool>,
) -> Result<RunReport> {
    let items = plan.shard_items(shard);
    let todo: Vec<&Item> = items.iter().filter(|i| !store.is_done(&i.key)).collect();
    let skipped = items.len() - todo.len();
    let continuations = todo.iter().map(|i| plan.item_continuations(i)).sum();
    observer.planned(todo.len(), skipped, continuations);
    let mut report = RunReport {
        ran: 0,
        skipped,
        interrupted: false,
    };
    let stopped = || stop.is_some_and(|s| s.load(Ordering::SeqCst));
    for (n, item) in todo.iter().enumerate() {
        if stopped() {
            report.interrupted = true;
            break;
        }
        observer.item_started(
            n + 1,
            todo.len(),
            &item.key,
            plan.methods[item.method].config.rounds,
        );
        match run_item(engine, plan, item, observer, stop)? {
            Some(record) => {
                store.append(&record)?;
                report.ran += 1;
                observer.item_finished(&record);
            }
            None => {
                report.interrupted = true;
                break;
            }
        }
    }
    if stopped() && report.ran + skipped < items.len() {
        report.interrupted = true;
    }
    Ok(report)
}
