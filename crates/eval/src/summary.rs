//! The summary of a results directory: per prompt set (and over all sets when there are
//! several), per method, the mean of each metric over prompts with a 95% percentile
//! bootstrap interval; the comparison with sampling at matched fluency; and the plots.
//!
//! **Matched fluency.** Sampling's curve is, per prompt, the `best-of-n` methods that
//! differ only in their temperature ([`crate::plan::on_sampling_curve`]): their points
//! (mean fluency of the K ideas, Vendi of the K) sorted by fluency and joined by straight
//! lines ([`Curve`]). For a method and prompt, the method's fluency is looked up on that
//! curve: inside its fluency range the interpolated Vendi is sampling's Vendi "at the
//! same fluency", and the gain is `method's Vendi - interpolated Vendi`; outside it the
//! prompt is counted as below or above the range and left out (never extrapolated). The
//! same is done for the number of distinct ideas and, on the pool, for the pool's
//! fluency and Vendi. The win rate is the share of in-range prompts where the method's
//! Vendi exceeds the interpolated one.
//!
//! **Matched diversity.** Likewise with sampling's curve of (Vendi of the K, mean reward
//! of the K): the reward gain is `method's mean reward - sampling's reward interpolated
//! at the method's Vendi`, over prompts where the method and every point of the curve
//! used the same reward spec.
//!
//! With fewer than two temperatures of `best-of-n`, the matched columns are "n/a" with
//! the reason.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;

use latentevo_plot::{frontier_png, scatter_png, FrontierPlot, ScatterPlot, Series};
use serde::Serialize;
use serde_json::Value;

use crate::error::{EvalError, Result};
use crate::method::MethodSpec;
use crate::plan::{on_sampling_curve, stable_hash};
use crate::record::Record;
use crate::stats::{bootstrap_mean, Curve, Interval, Lookup};
use crate::store::{write_atomically, Manifest};

/// The summary's settings.
#[derive(Debug, Clone, Copy)]
pub struct SummaryOptions {
    /// Bootstrap resamples per interval.
    pub resamples: usize,
    /// The seed of the resampling (each interval derives its own from it, the group, the
    /// method and the metric).
    pub seed: u64,
}

impl Default for SummaryOptions {
    /// 2000 resamples, seed 0.
    fn default() -> Self {
        SummaryOptions {
            resamples: 2000,
            seed: 0,
        }
    }
}

/// A metric: its key in `summary.json`, its column title, and how to read it off a line.
struct Metric {
    key: &'static str,
    title: &'static str,
    get: fn(&Record) -> Option<f64>,
    percent: bool,
}

fn some(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

const fn metric(key: &'static str, title: &'static str, get: fn(&Record) -> Option<f64>) -> Metric {
    Metric {
        key,
        title,
        get,
        percent: false,
    }
}

/// A share, printed as a percentage.
const fn percent(key: &'static str, title: &'static str, get: fn(&Record) -> Option<f64>) -> Metric {
    Metric {
        key,
        title,
        get,
        percent: true,
    }
}

const IDEA_METRICS: [Metric; 13] = [
    metric("best_reward", "best reward", |r| r.metrics.best_reward),
    metric("mean_reward", "mean reward", |r| r.metrics.mean_reward),
    metric("vendi", "Vendi", |r| some(r.metrics.vendi)),
    metric("distinct_1", "distinct-1", |r| some(r.metrics.distinct_1)),
    metric("distinct_2", "distinct-2", |r| some(r.metrics.distinct_2)),
    metric("novelty", "novelty", |r| r.metrics.novelty),
    metric("distinct_ideas", "distinct ideas", |r| {
        Some(r.metrics.distinct_ideas as f64)
    }),
    metric("fluency", "fluency", |r| r.metrics.mean_fluency),
    metric("kl", "KL", |r| r.metrics.mean_kl),
    metric("relevance", "relevance", |r| r.metrics.mean_relevance),
    metric("prompt_similarity", "prompt cos", |r| r.metrics.prompt_similarity),
    percent("masked_share", "masked", |r| some(r.metrics.masked_share)),
    metric("ideas", "ideas", |r| Some(r.metrics.count as f64)),
];

const POOL_METRICS: [Metric; 7] = [
    metric("pool_vendi", "pool Vendi", |r| some(r.pool.vendi)),
    metric("pool_distinct_ideas", "pool distinct ideas", |r| {
        Some(r.pool.distinct_ideas as f64)
    }),
    metric("pool_fluency", "pool fluency", |r| r.pool.mean_fluency),
    metric("pool_size", "pool size", |r| Some(r.pool.unmasked as f64)),
    percent("degenerate_share", "degenerate", |r| {
        some(r.pool.degenerate_share)
    }),
    metric("continuations", "continuations", |r| {
        Some(r.budget.continuations as f64)
    }),
    metric("tokens", "tokens", |r| Some(r.budget.tokens as f64)),
];

/// One method in one group.
#[derive(Debug, Clone, Serialize)]
pub struct MethodSummary {
    /// The label.
    pub method: String,
    /// Prompts with a line for it.
    pub prompts: usize,
    /// Each metric's mean over prompts with its interval (`null` when no prompt has it).
    pub metrics: BTreeMap<String, Option<Interval>>,
}

/// One method against sampling's curve.
#[derive(Debug, Clone, Serialize)]
pub struct MatchedRow {
    /// The label.
    pub method: String,
    /// Prompts with a line for it.
    pub prompts: usize,
    /// Prompts whose fluency of the K falls inside sampling's range on that prompt.
    pub inside: usize,
    /// Prompts below sampling's fluency range (less fluent than every temperature).
    pub below: usize,
    /// Prompts above it (more fluent than every temperature).
    pub above: usize,
    /// The method's Vendi of the K, over the in-range prompts.
    pub vendi: Option<Interval>,
    /// Sampling's Vendi interpolated at the method's fluency, over the same prompts.
    pub sampling_vendi: Option<Interval>,
    /// Vendi gain at matched fluency.
    pub vendi_gain: Option<Interval>,
    /// Distinct-ideas gain at matched fluency.
    pub distinct_gain: Option<Interval>,
    /// Share of in-range prompts where the method's Vendi beats sampling's.
    pub win_rate: Option<Interval>,
    /// Prompts inside sampling's pool-fluency range.
    pub pool_inside: usize,
    /// Pool-Vendi gain at matched pool fluency.
    pub pool_vendi_gain: Option<Interval>,
    /// Pool distinct-ideas gain at matched pool fluency.
    pub pool_distinct_gain: Option<Interval>,
    /// Share of those prompts where the method's pool Vendi beats sampling's.
    pub pool_win_rate: Option<Interval>,
    /// Prompts inside sampling's Vendi range with comparable rewards.
    pub reward_inside: usize,
    /// Mean-reward gain at matched Vendi of the K.
    pub reward_gain: Option<Interval>,
}

/// The comparison with sampling in one group.
#[derive(Debug, Clone, Serialize)]
pub struct Matched {
    /// The methods making sampling's curve.
    pub curve: Vec<String>,
    /// Why there is no comparison, when there is none.
    pub unavailable: Option<String>,
    /// One row per other method.
    pub rows: Vec<MatchedRow>,
}

/// One group: a prompt set, or all sets together.
#[derive(Debug, Clone, Serialize)]
pub struct GroupSummary {
    /// The set's name, or `all` for every set together.
    pub group: String,
    /// Whether this is every set together.
    pub combined: bool,
    /// Prompts in it.
    pub prompts: usize,
    /// Per method.
    pub methods: Vec<MethodSummary>,
    /// Against sampling.
    pub matched: Matched,
    /// Mean seconds per item, per method (timing: differs between runs).
    pub seconds: BTreeMap<String, Option<Interval>>,
}

/// The whole summary (`summary.json`).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Lines summarised.
    pub items: usize,
    /// Items the plan has.
    pub planned_items: usize,
    /// Bootstrap resamples per interval.
    pub resamples: usize,
    /// The bootstrap seed.
    pub bootstrap_seed: u64,
    /// The run's configuration (from `run.json`).
    pub configuration: Value,
    /// Per group.
    pub groups: Vec<GroupSummary>,
}

/// A method as the plan lists it.
struct MethodInfo {
    label: String,
    spec: Option<MethodSpec>,
    config: Value,
}

fn methods_of(manifest: &Manifest) -> Vec<MethodInfo> {
    manifest
        .plan
        .get("methods")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|m| {
                    let label = m.get("label")?.as_str()?.to_string();
                    Some(MethodInfo {
                        spec: label.parse().ok(),
                        config: m.get("config").cloned().unwrap_or(Value::Null),
                        label,
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

fn set_names(manifest: &Manifest) -> Vec<String> {
    manifest
        .plan
        .get("sets")
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .filter_map(|s| s.get("name")?.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Summarises the records of a run (see the module docs).
pub fn summarize(manifest: &Manifest, records: &[Record], options: SummaryOptions) -> Summary {
    let methods = methods_of(manifest);
    let sets = set_names(manifest);
    let mut groups: Vec<(String, Vec<&Record>)> = sets
        .iter()
        .map(|s| (s.clone(), records.iter().filter(|r| &r.set == s).collect()))
        .collect();
    if sets.len() > 1 {
        // The combined group; named so that it cannot clash with a set's name.
        let mut name = "all".to_string();
        while sets.contains(&name) {
            name.insert(0, '_');
        }
        groups.push((name, records.iter().collect()));
    }
    let combined = sets.len() > 1;
    Summary {
        items: records.len(),
        planned_items: manifest.plan.get("items").and_then(Value::as_u64).unwrap_or(0) as usize,
        resamples: options.resamples,
        bootstrap_seed: options.seed,
        configuration: manifest.configuration.clone(),
        groups: groups
            .iter()
            .enumerate()
            .map(|(i, (name, recs))| {
                let mut g = group_summary(name, recs, &methods, options);
                g.combined = combined && i + 1 == groups.len();
                g
            })
            .collect(),
    }
}

fn prompt_key(r: &Record) -> (String, String) {
    (r.set.clone(), r.prompt_id.clone())
}

fn group_summary(
    name: &str,
    records: &[&Record],
    methods: &[MethodInfo],
    options: SummaryOptions,
) -> GroupSummary {
    let interval = |method: &str, metric: &str, values: &[f64]| {
        bootstrap_mean(
            values,
            options.resamples,
            stable_hash(options.seed, &[name, method, metric]),
        )
    };
    let mut prompts: Vec<(String, String)> = records.iter().map(|r| prompt_key(r)).collect();
    prompts.sort();
    prompts.dedup();
    let by_method =
        |label: &str| -> Vec<&Record> { records.iter().copied().filter(|r| r.method == label).collect() };
    let mut method_rows = Vec::new();
    let mut seconds = BTreeMap::new();
    for m in methods {
        let recs = by_method(&m.label);
        let mut metrics = BTreeMap::new();
        for metric in IDEA_METRICS.iter().chain(&POOL_METRICS) {
            let values: Vec<f64> = recs.iter().filter_map(|r| (metric.get)(r)).collect();
            metrics.insert(metric.key.to_string(), interval(&m.label, metric.key, &values));
        }
        let secs: Vec<f64> = recs.iter().map(|r| r.timing.item_seconds).collect();
        seconds.insert(m.label.clone(), interval(&m.label, "seconds", &secs));
        method_rows.push(MethodSummary {
            method: m.label.clone(),
            prompts: recs.len(),
            metrics,
        });
    }
    GroupSummary {
        group: name.to_string(),
        combined: false,
        prompts: prompts.len(),
        methods: method_rows,
        matched: matched(name, records, methods, options),
        seconds,
    }
}

type Get = fn(&Record) -> Option<f64>;

/// Per prompt, the curve of sampling's (x, y) points.
fn curves(curve_records: &[&Record], x: Get, y: Get) -> HashMap<(String, String), Curve> {
    let mut points: HashMap<(String, String), Vec<(f64, f64)>> = HashMap::new();
    for r in curve_records {
        if let (Some(a), Some(b)) = (x(r), y(r)) {
            points.entry(prompt_key(r)).or_default().push((a, b));
        }
    }
    points
        .into_iter()
        .filter_map(|(k, p)| Curve::new(&p).map(|c| (k, c)))
        .collect()
}

fn matched(name: &str, records: &[&Record], methods: &[MethodInfo], options: SummaryOptions) -> Matched {
    let curve_labels: Vec<String> = methods
        .iter()
        .filter(|m| m.spec.as_ref().is_some_and(on_sampling_curve))
        .map(|m| m.label.clone())
        .collect();
    if curve_labels.len() < 2 {
        return Matched {
            unavailable: Some(format!(
                "needs best-of-n at two or more temperatures (e.g. --temperatures 0.3,0.5,0.7,1.0); this run has {}",
                match curve_labels.len() {
                    0 => "none".to_string(),
                    _ => format!("only {}", curve_labels[0]),
                }
            )),
            curve: curve_labels,
            rows: Vec::new(),
        };
    }
    let curve_records: Vec<&Record> = records
        .iter()
        .copied()
        .filter(|r| curve_labels.contains(&r.method))
        .collect();
    let fluency: Get = |r| r.metrics.mean_fluency;
    let vendi: Get = |r| some(r.metrics.vendi);
    let distinct: Get = |r| Some(r.metrics.distinct_ideas as f64);
    let pool_fluency: Get = |r| r.pool.mean_fluency;
    let pool_vendi: Get = |r| some(r.pool.vendi);
    let pool_distinct: Get = |r| Some(r.pool.distinct_ideas as f64);
    let reward: Get = |r| r.metrics.mean_reward;
    let vendi_curve = curves(&curve_records, fluency, vendi);
    let distinct_curve = curves(&curve_records, fluency, distinct);
    let pool_vendi_curve = curves(&curve_records, pool_fluency, pool_vendi);
    let pool_distinct_curve = curves(&curve_records, pool_fluency, pool_distinct);
    // Reward curves only over prompts whose curve points share one reward spec.
    let mut rewards_of: HashMap<(String, String), Vec<Option<&str>>> = HashMap::new();
    for r in &curve_records {
        rewards_of.entry(prompt_key(r)).or_default().push(r.reward_spec());
    }
    let reward_curve = curves(&curve_records, vendi, reward);
    let mut rows = Vec::new();
    for m in methods.iter().filter(|m| !curve_labels.contains(&m.label)) {
        let recs: Vec<&Record> = records.iter().copied().filter(|r| r.method == m.label).collect();
        let (mut inside, mut below, mut above) = (0, 0, 0);
        let mut own = Vec::new();
        let mut at = Vec::new();
        let mut gain = Vec::new();
        let mut dgain = Vec::new();
        let mut wins = Vec::new();
        let mut pool_gain = Vec::new();
        let mut pool_dgain = Vec::new();
        let mut pool_wins = Vec::new();
        let mut reward_gain = Vec::new();
        for r in &recs {
            let key = prompt_key(r);
            let (Some(f), Some(v)) = (fluency(r), vendi(r)) else {
                continue;
            };
            if let Some(c) = vendi_curve.get(&key) {
                match c.at(f) {
                    Lookup::Inside(s) => {
                        inside += 1;
                        own.push(v);
                        at.push(s);
                        gain.push(v - s);
                        wins.push(if v > s { 1.0 } else { 0.0 });
                        if let Some(d) = distinct_curve.get(&key).and_then(|c| c.at(f).value()) {
                            dgain.push(r.metrics.distinct_ideas as f64 - d);
                        }
                    }
                    Lookup::Below => below += 1,
                    Lookup::Above => above += 1,
                    Lookup::Undefined => {}
                }
            }
            if let (Some(pf), Some(c)) = (pool_fluency(r), pool_vendi_curve.get(&key)) {
                if let Some(s) = c.at(pf).value() {
                    pool_gain.push(r.pool.vendi - s);
                    pool_wins.push(if r.pool.vendi > s { 1.0 } else { 0.0 });
                    if let Some(d) = pool_distinct_curve.get(&key).and_then(|c| c.at(pf).value()) {
                        pool_dgain.push(r.pool.distinct_ideas as f64 - d);
                    }
                }
            }
            let same_reward = rewards_of
                .get(&key)
                .is_some_and(|specs| specs.iter().all(|s| *s == r.reward_spec()));
            if let (true, Some(mr), Some(c)) = (same_reward, reward(r), reward_curve.get(&key)) {
                if let Some(s) = c.at(v).value() {
                    reward_gain.push(mr - s);
                }
            }
        }
        let ci = |metric: &str, values: &[f64]| {
            bootstrap_mean(
                values,
                options.resamples,
                stable_hash(options.seed, &[name, &m.label, metric]),
            )
        };
        rows.push(MatchedRow {
            method: m.label.clone(),
            prompts: recs.len(),
            inside,
            below,
            above,
            vendi: ci("matched_vendi", &own),
            sampling_vendi: ci("matched_sampling_vendi", &at),
            vendi_gain: ci("vendi_gain", &gain),
            distinct_gain: ci("distinct_gain", &dgain),
            win_rate: ci("win_rate", &wins),
            pool_inside: pool_gain.len(),
            pool_vendi_gain: ci("pool_vendi_gain", &pool_gain),
            pool_distinct_gain: ci("pool_distinct_gain", &pool_dgain),
            pool_win_rate: ci("pool_win_rate", &pool_wins),
            reward_inside: reward_gain.len(),
            reward_gain: ci("reward_gain", &reward_gain),
        });
    }
    Matched {
        curve: curve_labels,
        unavailable: None,
        rows,
    }
}

fn cell(i: &Option<Interval>, percent: bool) -> String {
    match i {
        None => "–".to_string(),
        Some(i) => {
            let f = |v: f64| {
                if percent {
                    format!("{:.1}%", 100.0 * v)
                } else {
                    format!("{v:.3}")
                }
            };
            if i.n == 1 || !(i.low.is_finite() && i.high.is_finite()) || i.low == i.high {
                f(i.mean)
            } else {
                format!("{} [{}, {}]", f(i.mean), f(i.low), f(i.high))
            }
        }
    }
}

fn prompts_text(n: usize) -> String {
    if n == 1 {
        "1 prompt".to_string()
    } else {
        format!("{n} prompts")
    }
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|")
}

/// The Markdown summary (`summary.md`).
pub fn markdown(summary: &Summary, manifest: &Manifest) -> String {
    let c = &summary.configuration;
    let mut out = String::new();
    let _ = writeln!(out, "# Evaluation summary\n");
    let get = |k: &str| {
        c.get(k)
            .map(|v| v.to_string().trim_matches('"').to_string())
            .unwrap_or_default()
    };
    let _ = writeln!(
        out,
        "{} of {} items (prompt x method). Model `{}` ({}, {}), embedder `{}`; budget {} continuations per item (population {}), K = {} ideas, at most {} new tokens, seed {}; distinct ideas at cosine {}.",
        summary.items,
        summary.planned_items,
        get("model"),
        get("device"),
        get("dtype"),
        get("embedder"),
        get("budget"),
        get("population"),
        get("top_k"),
        get("max_new_tokens"),
        get("seed"),
        get("distinct_threshold"),
    );
    if let Some(cmd) = &manifest.command {
        let _ = writeln!(out, "\nCommand:\n\n```sh\n{cmd}\n```");
    }
    let _ = writeln!(
        out,
        "\nEvery cell is the mean over prompts; brackets hold its 95% percentile bootstrap interval over prompts ({} resamples, seed {}).",
        summary.resamples, summary.bootstrap_seed
    );
    if summary.items < summary.planned_items {
        let _ = writeln!(
            out,
            "\n**Incomplete:** {} items are missing (resume the run to finish it); the numbers are over the lines present.",
            summary.planned_items - summary.items
        );
    }
    for g in &summary.groups {
        let title = if g.combined {
            "All sets together".to_string()
        } else {
            format!("Set `{}`", g.group)
        };
        let _ = writeln!(out, "\n## {title} ({})\n", prompts_text(g.prompts));
        let _ = writeln!(out, "### Against sampling at matched fluency\n");
        match &g.matched.unavailable {
            Some(why) => {
                let _ = writeln!(out, "n/a: {why}.");
            }
            None => {
                let _ = writeln!(out, "Sampling's curve: {}.\n", g.matched.curve.join(", "));
                let _ = writeln!(
                    out,
                    "| method | prompts in range (below, above) | Vendi | sampling's Vendi | Vendi gain | distinct-ideas gain | win rate | pool Vendi gain (prompts) | pool distinct gain | pool win rate | reward gain at matched Vendi (prompts) |"
                );
                let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|");
                for r in &g.matched.rows {
                    let _ = writeln!(
                        out,
                        "| {} | {} of {} ({}, {}) | {} | {} | {} | {} | {} | {} ({}) | {} | {} | {} ({}) |",
                        md_escape(&r.method),
                        r.inside,
                        r.prompts,
                        r.below,
                        r.above,
                        cell(&r.vendi, false),
                        cell(&r.sampling_vendi, false),
                        cell(&r.vendi_gain, false),
                        cell(&r.distinct_gain, false),
                        cell(&r.win_rate, true),
                        cell(&r.pool_vendi_gain, false),
                        r.pool_inside,
                        cell(&r.pool_distinct_gain, false),
                        cell(&r.pool_win_rate, true),
                        cell(&r.reward_gain, false),
                        r.reward_inside,
                    );
                }
            }
        }
        let table = |out: &mut String, metrics: &[Metric], with_seconds: bool| {
            let mut head = "| method | prompts |".to_string();
            let mut rule = "|---|---|".to_string();
            for m in metrics {
                let _ = write!(head, " {} |", m.title);
                rule.push_str("---|");
            }
            if with_seconds {
                head.push_str(" seconds |");
                rule.push_str("---|");
            }
            let _ = writeln!(out, "{head}\n{rule}");
            for ms in &g.methods {
                let mut row = format!("| {} | {} |", md_escape(&ms.method), ms.prompts);
                for m in metrics {
                    let _ = write!(
                        row,
                        " {} |",
                        cell(ms.metrics.get(m.key).unwrap_or(&None), m.percent)
                    );
                }
                if with_seconds {
                    let _ = write!(
                        row,
                        " {} |",
                        cell(g.seconds.get(&ms.method).unwrap_or(&None), false)
                    );
                }
                let _ = writeln!(out, "{row}");
            }
        };
        let _ = writeln!(out, "\n### The K ideas each method returns\n");
        table(&mut out, &IDEA_METRICS, false);
        let _ = writeln!(out, "\n### The pool (every unmasked candidate) and the budget\n");
        table(&mut out, &POOL_METRICS, true);
        if !g.combined {
            let _ = writeln!(
                out,
                "\nPlots: [frontier of the K](plots/{0}-frontier-ideas.png), [frontier of the pool](plots/{0}-frontier-pool.png), [reward against Vendi](plots/{0}-reward-vs-vendi.png).",
                g.group
            );
        } else {
            let _ = writeln!(
                out,
                "\nRewards differ between sets (a set's prompts may bring their own), so reward means over all sets mix scales; the gains are differences within each prompt. Plots: [frontier of the K](plots/{0}-frontier-ideas.png), [frontier of the pool](plots/{0}-frontier-pool.png).",
                g.group
            );
        }
    }
    out.push_str(NOTES);
    out
}

const NOTES: &str = r#"
## What the columns mean

- **Against sampling at matched fluency.** For each prompt, sampling's curve joins the
  `best-of-n` points of the swept temperatures, (mean fluency of the K ideas, Vendi of
  the K), sorted by fluency, with straight lines. A method's fluency on that prompt is
  looked up on it: if it falls inside the curve's fluency range, *sampling's Vendi* is the
  interpolated value and the *Vendi gain* is the method's Vendi minus it; if it falls
  outside (below: less fluent than every temperature; above: more fluent than every
  temperature) the prompt is left out, not extrapolated. *Prompts in range* counts the
  prompts used. *Distinct-ideas gain* does the same with the number of distinct ideas of
  the K. *Win rate*: the share of in-range prompts where the method's Vendi is higher
  than sampling's at the same fluency (a bootstrap interval of that share). The *pool*
  columns repeat this with the pool's fluency and Vendi (every unmasked candidate, not
  only the K; `sample`'s pool is its K continuations, so its pool columns compare a
  smaller budget). *Reward gain at matched Vendi*: the method's mean reward of the K minus
  sampling's, interpolated on the curve (Vendi of the K, mean reward) at the method's
  Vendi, over prompts where both used the same reward.
- **best reward / mean reward**: of the K ideas (masked continuations, which only
  `sample` returns, have none).
- **Vendi**: the Vendi score of the K ideas' MiniLM embeddings (cosine kernel): the
  effective number of different ideas, 1 to K.
- **distinct-1 / distinct-2**: unique word uni-/bigrams over all of the K texts together.
- **novelty**: mean of 1 - cosine between each idea and the greedy (unperturbed) answer.
- **relevance**: mean of the ideas' `relevance` reward term, the pointwise mutual information with the prompt (new tokens only); blank when the reward has no such term.
- **prompt cos**: mean cosine between each idea's embedding and the prompt's: a model-free check that the ideas stay on the request (spread can also come from leaving it).
- **distinct ideas**: groups of a greedy partition of the K at the stated cosine threshold.
  The selector already merges candidates at the dedup threshold, so for selected ideas
  this is usually K; the pool's count separates methods.
- **fluency**: mean log-probability per token under the unperturbed model.
- **KL**: mean per-token KL(perturbed || unperturbed) of the next-token distributions
  (0 for plain sampling: the temperature is not counted).
- **masked**: masked candidates (degenerate, lethal mutation, no reward) over all
  candidates generated. **degenerate**: those the degeneracy test flags (empty, garbage,
  loops, repetition) over all candidates.
- **pool Vendi / pool distinct ideas / pool fluency / pool size**: over every unmasked
  candidate of the item.
- **continuations / tokens / seconds**: what an item spent (the search's greedy pass and
  calibration are in the seconds, not in the continuations); `sample` generates only K.
"#;

/// A method's point label and family on the frontier plots.
fn family(info: &MethodInfo) -> (String, String) {
    let config = &info.config;
    let kl = config
        .get("scale")
        .and_then(|s| s.get("kl-target"))
        .and_then(Value::as_f64);
    let fixed = config
        .get("scale")
        .and_then(|s| s.get("fixed"))
        .and_then(Value::as_f64);
    let t = config.get("temperature").and_then(Value::as_f64);
    match &info.spec {
        Some(spec) if spec.kind.perturbs() => match (kl, fixed) {
            (Some(kl), _) => (spec.without("kl").to_string(), format!("kl={kl}")),
            (_, Some(s)) => (spec.without("scale").to_string(), format!("s={s}")),
            _ => (info.label.clone(), String::new()),
        },
        Some(spec) => (
            spec.without("t").to_string(),
            t.map(|t| format!("T={t}")).unwrap_or_default(),
        ),
        None => (info.label.clone(), String::new()),
    }
}

/// A point of a frontier with its label (`T=0.7`, `kl=0.05`).
type LabelledPoint = (f64, f64, String);

fn frontier_series(g: &GroupSummary, methods: &[MethodInfo], x: &str, y: &str) -> Vec<Series> {
    let mut families: Vec<(String, Vec<LabelledPoint>)> = Vec::new();
    for m in methods {
        let Some(ms) = g.methods.iter().find(|s| s.method == m.label) else {
            continue;
        };
        let mean = |k: &str| ms.metrics.get(k).and_then(|i| i.as_ref()).map(|i| i.mean);
        let (Some(px), Some(py)) = (mean(x), mean(y)) else {
            continue;
        };
        let (name, label) = family(m);
        match families.iter_mut().find(|(n, _)| *n == name) {
            Some((_, pts)) => pts.push((px, py, label)),
            None => families.push((name, vec![(px, py, label)])),
        }
    }
    families
        .into_iter()
        .map(|(name, pts)| Series {
            connect: pts.len() > 1,
            labels: if pts.iter().all(|p| p.2.is_empty()) {
                Vec::new()
            } else {
                pts.iter().map(|p| p.2.clone()).collect()
            },
            points: pts.iter().map(|p| (p.0, p.1)).collect(),
            name,
        })
        .collect()
}

/// Writes `summary.json`, `summary.md` and the plots (`plots/`) into `dir`.
///
/// # Errors
///
/// [`EvalError::Io`], [`EvalError::Json`], [`EvalError::Plot`].
pub fn write_summary(
    dir: &Path,
    manifest: &Manifest,
    records: &[Record],
    options: SummaryOptions,
) -> Result<Summary> {
    let summary = summarize(manifest, records, options);
    let json = serde_json::to_string_pretty(&summary).map_err(|source| EvalError::Json {
        path: dir.join("summary.json"),
        source,
    })?;
    let plots = dir.join("plots");
    std::fs::create_dir_all(&plots).map_err(|e| EvalError::io(&plots, e))?;
    let methods = methods_of(manifest);
    for g in &summary.groups {
        let title = |what: &str| {
            if g.combined {
                format!("{what}, all sets ({})", prompts_text(g.prompts))
            } else {
                format!("{what}, set {} ({})", g.group, prompts_text(g.prompts))
            }
        };
        frontier_png(
            &plots.join(format!("{}-frontier-ideas.png", g.group)),
            &FrontierPlot {
                title: title("Diversity against fluency of the K ideas"),
                x_label: "mean fluency of the K (log-prob per token)".into(),
                y_label: "Vendi score of the K".into(),
                series: frontier_series(g, &methods, "fluency", "vendi"),
            },
        )?;
        frontier_png(
            &plots.join(format!("{}-frontier-pool.png", g.group)),
            &FrontierPlot {
                title: title("Diversity against fluency of the pool"),
                x_label: "mean fluency of the pool (log-prob per token)".into(),
                y_label: "Vendi score of the pool".into(),
                series: frontier_series(g, &methods, "pool_fluency", "pool_vendi"),
            },
        )?;
        if !g.combined {
            let series: Vec<Series> = methods
                .iter()
                .map(|m| Series {
                    name: m.label.clone(),
                    points: records
                        .iter()
                        .filter(|r| r.set == g.group && r.method == m.label)
                        .filter_map(|r| Some((r.metrics.vendi, r.metrics.mean_reward?)))
                        .collect(),
                    labels: Vec::new(),
                    connect: false,
                })
                .collect();
            scatter_png(
                &plots.join(format!("{}-reward-vs-vendi.png", g.group)),
                &ScatterPlot {
                    title: title("Reward against diversity, one point per prompt"),
                    x_label: "Vendi score of the K".into(),
                    y_label: "mean reward of the K".into(),
                    series,
                },
            )?;
        }
    }
    write_atomically(&dir.join("summary.json"), format!("{json}\n").as_bytes())?;
    write_atomically(&dir.join("summary.md"), markdown(&summary, manifest).as_bytes())?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(label: &str, config: Value) -> MethodInfo {
        MethodInfo {
            label: label.into(),
            spec: label.parse().ok(),
            config,
        }
    }

    #[test]
    fn families_join_sweeps() {
        let a = family(&info(
            "diffevo[kl=0.05]",
            serde_json::json!({"scale": {"kl-target": 0.05}}),
        ));
        let b = family(&info("diffevo", serde_json::json!({"scale": {"kl-target": 0.1}})));
        assert_eq!(a, ("diffevo".into(), "kl=0.05".into()));
        assert_eq!(b, ("diffevo".into(), "kl=0.1".into()));
        let s = family(&info(
            "best-of-n[t=0.3]",
            serde_json::json!({"scale": "none", "temperature": 0.3}),
        ));
        assert_eq!(s, ("best-of-n".into(), "T=0.3".into()));
        let l = family(&info(
            "diffevo[kl=0.2,layer=5]",
            serde_json::json!({"scale": {"kl-target": 0.2}}),
        ));
        assert_eq!(l, ("diffevo[layer=5]".into(), "kl=0.2".into()));
    }

    /// A line with the given fluency, Vendi and mean reward of the K (everything else
    /// neutral).
    fn line(prompt: &str, method: &str, fluency: f64, vendi: f64, reward: f64) -> Record {
        serde_json::from_value(serde_json::json!({
            "set": "s", "prompt_id": prompt, "method": method, "prompt": "p", "seed": 0,
            "method_spec": {}, "config": {"reward": "novelty"}, "reference": "r",
            "calibration": {"target_kl": null, "scale": 0.0, "achieved_kl": null},
            "budget": {"continuations": 4, "rounds": 2, "population": 2, "tokens": 10},
            "ideas": [],
            "metrics": {"count": 4, "best_reward": reward, "mean_reward": reward, "vendi": vendi,
                "distinct_1": 1.0, "distinct_2": 1.0, "novelty": 0.5, "distinct_ideas": 3,
                "mean_fluency": fluency, "mean_kl": 0.0, "masked_share": 0.0},
            "pool": {"candidates": 4, "unmasked": 4, "vendi": vendi, "distinct_ideas": 3,
                "mean_pairwise_distance": 0.5, "mean_fluency": fluency, "degenerate_share": 0.0},
            "warnings": [],
            "timing": {"search_seconds": 1.0, "item_seconds": 1.0, "calibration_evaluations": 0, "calibration_cached": false}
        }))
        .unwrap()
    }

    #[test]
    fn matched_fluency_by_hand() {
        let labels = ["best-of-n[t=0.3]", "best-of-n[t=1]", "diffevo"];
        let manifest = Manifest {
            format: 1,
            version: "0".into(),
            configuration: serde_json::json!({"seed": 0}),
            plan: serde_json::json!({
                "sets": [{"name": "s"}],
                "items": 9,
                "methods": labels.iter().map(|l| serde_json::json!({"label": l, "config": {}})).collect::<Vec<_>>(),
            }),
            shard: None,
            items: 9,
            results: "results.jsonl".into(),
            merged_from: None,
            prompt_problems: Vec::new(),
            command: None,
        };
        let records = vec![
            // Prompt a: sampling (-1, 2) and (-3, 6); at fluency -2 sampling's Vendi is 4.
            // diffevo has 5: gain +1, a win. Reward: sampling (Vendi 2, reward 1) and
            // (6, 3), so at Vendi 5 sampling's reward is 2.5; diffevo's 3 gains +0.5.
            line("a", labels[0], -1.0, 2.0, 1.0),
            line("a", labels[1], -3.0, 6.0, 3.0),
            line("a", labels[2], -2.0, 5.0, 3.0),
            // Prompt b: at fluency -1.5 sampling's Vendi is 3 + 0.25 * 4 = 4; diffevo's 3.5
            // loses by 0.5. Reward at Vendi 3.5: 1 + 0.5/4 * 2 = 1.25; diffevo's 1 gains -0.25.
            line("b", labels[0], -1.0, 3.0, 1.0),
            line("b", labels[1], -3.0, 7.0, 3.0),
            line("b", labels[2], -1.5, 3.5, 1.0),
            // Prompt c: more fluent than every temperature: out of range, not extrapolated;
            // its Vendi 3 is on sampling's Vendi range, where sampling's reward is 1: gain 0.
            line("c", labels[0], -1.0, 3.0, 1.0),
            line("c", labels[1], -3.0, 7.0, 3.0),
            line("c", labels[2], -0.5, 3.0, 1.0),
        ];
        let s = summarize(
            &manifest,
            &records,
            SummaryOptions {
                resamples: 500,
                seed: 1,
            },
        );
        let m = &s.groups[0].matched;
        assert!(m.unavailable.is_none());
        assert_eq!(m.curve, labels[..2]);
        let r = &m.rows[0];
        assert_eq!(
            (r.method.as_str(), r.inside, r.below, r.above),
            ("diffevo", 2, 0, 1)
        );
        let close = |i: &Option<Interval>, v: f64| (i.unwrap().mean - v).abs() < 1e-12;
        assert!(close(&r.vendi_gain, 0.25), "{:?}", r.vendi_gain); // (1 - 0.5) / 2
        assert!(close(&r.sampling_vendi, 4.0));
        assert!(close(&r.vendi, 4.25));
        assert!(close(&r.win_rate, 0.5));
        assert!(close(&r.distinct_gain, 0.0));
        assert_eq!(r.reward_inside, 3);
        assert!(close(&r.reward_gain, 0.25 / 3.0), "{:?}", r.reward_gain); // (0.5 - 0.25 + 0) / 3
        let ci = r.vendi_gain.unwrap();
        assert!(ci.low >= -0.5 - 1e-12 && ci.high <= 1.0 + 1e-12 && ci.low <= ci.high);
        // One temperature only: n/a with the reason.
        let few: Vec<Record> = records
            .iter()
            .filter(|r| r.method != labels[1])
            .cloned()
            .collect();
        let mut m2 = manifest.clone();
        m2.plan["methods"] = serde_json::json!([{"label": labels[0]}, {"label": labels[2]}]);
        let s2 = summarize(&m2, &few, SummaryOptions::default());
        let why = s2.groups[0].matched.unavailable.as_deref().unwrap();
        assert!(why.contains("only best-of-n[t=0.3]"), "{why}");
    }

    #[test]
    fn cells_show_intervals() {
        let i = Some(Interval {
            mean: 1.0,
            low: 0.5,
            high: 1.5,
            n: 4,
        });
        assert_eq!(cell(&i, false), "1.000 [0.500, 1.500]");
        assert_eq!(cell(&None, false), "–");
        let p = Some(Interval {
            mean: 0.25,
            low: 0.25,
            high: 0.25,
            n: 1,
        });
        assert_eq!(cell(&p, true), "25.0%");
    }
}
