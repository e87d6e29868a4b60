//! `latentevo eval`: the batch evaluation over prompt sets (run, merge, summary).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use latentevo_engine::{Engine, Scale, SearchConfig};
use latentevo_eval::method::{expand, parse_methods};
use latentevo_eval::summary::{Summary, SummaryOptions};
use latentevo_eval::{
    runner, EvalError, ItemKey, Manifest, Plan, PromptSet, Record, ResultsStore, RunSettings, Shard,
};
use latentevo_reward::Embedder;

use super::{usage, ModelArgs, SearchFlags};

/// Arguments of `latentevo eval`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct EvalArgs {
    #[command(subcommand)]
    pub command: Option<EvalCommand>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// The subcommands of `latentevo eval`.
#[derive(Debug, clap::Subcommand)]
pub enum EvalCommand {
    /// Merge the directories of the shards of one run into one results directory.
    Merge(MergeArgs),
    /// Write (again) a results directory's summary.md, summary.json and plots.
    Summary(SummaryArgs),
}

/// Arguments of `latentevo eval merge`.
#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// The shards' results directories.
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// The merged results directory (new or empty).
    #[arg(long)]
    pub out: PathBuf,
    /// Bootstrap resamples per interval of the summary.
    #[arg(long, default_value_t = 2000)]
    pub bootstrap: usize,
}

/// Arguments of `latentevo eval summary`.
#[derive(Debug, clap::Args)]
pub struct SummaryArgs {
    /// The results directory.
    pub dir: PathBuf,
    /// Bootstrap resamples per interval.
    #[arg(long, default_value_t = 2000)]
    pub bootstrap: usize,
}

/// The flags of an evaluation run.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Prompt sets (JSONL files), comma-separated or repeated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub prompts: Vec<PathBuf>,
    /// Results directory (new or empty; with --resume, the run to continue).
    #[arg(long, required = true)]
    pub out: Option<PathBuf>,
    /// Methods, comma-separated: diffevo, random, cmaes, openes, best-of-n, sample, each
    /// with optional overrides, e.g. "diffevo[kl=0.05,layer=5],best-of-n[t=0.3],sample".
    #[arg(long, required = true)]
    pub methods: Option<String>,
    /// Continuations per item (sample: K); search methods run budget / population rounds.
    #[arg(long, required = true)]
    pub budget: Option<usize>,
    /// Candidates per round (the budget must be a multiple of it).
    #[arg(long, default_value_t = 16)]
    pub population: usize,
    /// Expand best-of-n and sample (without t=) into one method per temperature.
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    pub temperatures: Vec<f64>,
    /// Expand the perturbation methods (without kl= or scale=) into one per KL target.
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    pub kl_targets: Vec<f64>,
    /// Run shard I of N (0-based; round-robin over the items): `--shard 0/4`.
    #[arg(long)]
    pub shard: Option<String>,
    /// Continue the run recorded in --out, skipping the items already there.
    #[arg(long)]
    pub resume: bool,
    /// Only the first N prompts of each set.
    #[arg(long)]
    pub limit: Option<usize>,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub search: SearchFlags,
    /// KL target of the perturbation methods without kl= (and without --kl-targets).
    #[arg(long, default_value_t = 0.1, allow_negative_numbers = true)]
    pub kl_target: f64,
    /// Cosine at or above which the distinct-ideas metric counts two texts as one idea.
    #[arg(long, default_value_t = 0.85)]
    pub distinct_threshold: f64,
    /// Bootstrap resamples per interval of the summary.
    #[arg(long, default_value_t = 2000)]
    pub bootstrap: usize,
}

/// Runs `latentevo eval` and its subcommands.
pub fn run(args: EvalArgs) -> Result<()> {
    match args.command {
        Some(EvalCommand::Merge(m)) => merge(m),
        Some(EvalCommand::Summary(s)) => summary(s),
        None => evaluate(args.run),
    }
}

fn eval_error(e: EvalError) -> anyhow::Error {
    if e.is_usage() {
        usage(e)
    } else {
        anyhow::Error::new(e)
    }
}

fn summary_options(manifest: &Manifest, resamples: usize) -> SummaryOptions {
    SummaryOptions {
        resamples,
        seed: manifest
            .configuration
            .get("seed")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0),
    }
}

fn merge(args: MergeArgs) -> Result<()> {
    let first = Manifest::read(&args.dirs[0]).map_err(eval_error)?;
    let summary =
        latentevo_eval::merge::merge(&args.dirs, &args.out, summary_options(&first, args.bootstrap))
            .map_err(eval_error)?;
    println!(
        "merged {} shards ({} items) into {}",
        args.dirs.len(),
        summary.items,
        args.out.display()
    );
    print_headline(&summary, &args.out);
    Ok(())
}

fn summary(args: SummaryArgs) -> Result<()> {
    let manifest = Manifest::read(&args.dir).map_err(eval_error)?;
    let (summary, notes) =
        latentevo_eval::merge::summarize_dir(&args.dir, summary_options(&manifest, args.bootstrap))
            .map_err(eval_error)?;
    for n in notes {
        eprintln!("warning: {n}");
    }
    print_headline(&summary, &args.dir);
    Ok(())
}

fn positive_list(flag: &'static str, values: &[f64]) -> Result<()> {
    if let Some(v) = values.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
        return Err(usage(format!(
            "--{flag}: every value must be a finite number > 0, got {v}"
        )));
    }
    Ok(())
}

impl RunArgs {
    /// The run's defaults for a model of `num_layers` layers.
    fn defaults(&self, num_layers: usize) -> Result<SearchConfig> {
        let mut c = SearchConfig::for_layers(num_layers);
        self.search.apply(&mut c)?;
        c.population = self.population;
        c.scale = Scale::KlTarget(self.kl_target);
        Ok(c)
    }

    fn settings(&self, defaults: SearchConfig, dtype: &str) -> RunSettings {
        let canonical = |p: &Path| {
            std::fs::canonicalize(p)
                .unwrap_or_else(|_| p.to_path_buf())
                .display()
                .to_string()
        };
        RunSettings {
            budget: self.budget.unwrap_or(0),
            defaults,
            distinct_threshold: self.distinct_threshold,
            model: match &self.model.model {
                None => "default".to_string(),
                Some(m) if Path::new(m).exists() => canonical(Path::new(m)),
                Some(m) => m.clone(),
            },
            embedder: self
                .search
                .embedder
                .as_deref()
                .map(canonical)
                .unwrap_or_else(|| "default".into()),
            device: self.model.device.split(':').next().unwrap_or("cpu").to_string(),
            dtype: dtype.to_string(),
        }
    }
}

fn command_line() -> String {
    std::env::args()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=,:+@%".contains(c))
            {
                a
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn evaluate(args: RunArgs) -> Result<()> {
    let out = args.out.clone().context("--out is required")?;
    let methods_text = args.methods.clone().context("--methods is required")?;
    // Everything that does not need the model is checked before loading it.
    positive_list("temperatures", &args.temperatures)?;
    positive_list("kl-targets", &args.kl_targets)?;
    let specs = parse_methods(&methods_text).map_err(eval_error)?;
    let specs = expand(&specs, &args.temperatures, &args.kl_targets);
    let shard: Option<Shard> = args
        .shard
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(eval_error)?;
    let mut sets = Vec::new();
    for path in &args.prompts {
        let set = PromptSet::load(path).map_err(eval_error)?;
        for p in &set.problems {
            eprintln!("warning: {p}");
        }
        sets.push(set);
    }
    let provisional_dtype = args.model.dtype.clone().unwrap_or_default();
    let provisional = Plan::new(
        args.settings(args.defaults(usize::MAX)?, &provisional_dtype),
        sets.clone(),
        &specs,
        args.limit,
    )
    .map_err(eval_error)?;
    provisional.validate(usize::MAX).map_err(eval_error)?;
    if !args.resume && out.is_dir() && std::fs::read_dir(&out).is_ok_and(|mut d| d.next().is_some()) {
        return Err(eval_error(EvalError::DirNotEmpty { dir: out.clone() }));
    }

    let loaded = args.model.load()?;
    let num_layers = loaded.model.num_layers();
    let mut dtype = format!("{:?}", loaded.model.dtype()).to_lowercase();
    if loaded.model.expert_format() != latentevo_model::ExpertFormat::Dense {
        dtype = format!("{dtype}, experts {}", loaded.model.expert_format());
    }
    let plan = Plan::new(
        args.settings(args.defaults(num_layers)?, &dtype),
        sets,
        &specs,
        args.limit,
    )
    .map_err(eval_error)?;
    plan.validate(num_layers).map_err(eval_error)?;
    let embedder_dir = match &args.search.embedder {
        Some(dir) => dir.clone(),
        None => latentevo_reward::ensure_minilm(true)
            .context("preparing the sentence-embedding model (pass --embedder DIR to use another)")?,
    };
    let embedder = Embedder::load(&embedder_dir, loaded.model.device())
        .with_context(|| format!("loading the embedder from {}", embedder_dir.display()))?;
    let engine = Engine::new(loaded, embedder)?;

    let manifest = plan.manifest(shard, Some(command_line()));
    let mut store = ResultsStore::open(&out, &manifest, args.resume).map_err(eval_error)?;
    for note in store.notes() {
        eprintln!("warning: {note}");
    }

    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        let _ = ctrlc::set_handler(move || {
            if flag.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!(
                "\ninterrupted: abandoning the item in flight (nothing partial is written); Ctrl-C again to quit at once"
            );
        });
    }
    let mut progress = Progress::new();
    let report = runner::run(
        &engine,
        &plan,
        shard,
        &mut store,
        &mut progress,
        Some(interrupted.as_ref()),
    )
    .map_err(eval_error)?;
    progress.bar.finish_and_clear();
    let results = store.path().display().to_string();
    if report.interrupted {
        eprintln!(
            "interrupted after {} new items ({} were already there); results so far in {results}; continue with --resume",
            report.ran, report.skipped
        );
        std::process::exit(130);
    }
    eprintln!(
        "{} items run, {} already there; results in {results}",
        report.ran, report.skipped
    );
    let dir = latentevo_eval::merge::read_dir(&out).map_err(eval_error)?;
    let summary = latentevo_eval::summary::write_summary(
        &out,
        &dir.manifest,
        &dir.records,
        summary_options(&manifest, args.bootstrap),
    )
    .map_err(eval_error)?;
    print_headline(&summary, &out);
    Ok(())
}

/// The headline lines: per group, each method's Vendi gain and win rate at matched fluency.
fn print_headline(summary: &Summary, dir: &Path) {
    for g in &summary.groups {
        match &g.matched.unavailable {
            Some(why) => println!("{} ({} prompts): matched fluency n/a: {why}", g.group, g.prompts),
            None => {
                for r in &g.matched.rows {
                    let f = |i: &Option<latentevo_eval::stats::Interval>| {
                        i.map(|i| format!("{:+.3} [{:+.3}, {:+.3}]", i.mean, i.low, i.high))
                            .unwrap_or_else(|| "n/a".into())
                    };
                    println!(
                        "{} {}: Vendi gain at matched fluency {} over {} of {} prompts, win rate {}",
                        g.group,
                        r.method,
                        f(&r.vendi_gain),
                        r.inside,
                        r.prompts,
                        r.win_rate
                            .map(|w| format!("{:.0}%", 100.0 * w.mean))
                            .unwrap_or_else(|| "n/a".into())
                    );
                }
            }
        }
    }
    println!("summary: {}", dir.join("summary.md").display());
}

/// The progress bar (continuations, with ETA), and a line per finished item.
struct Progress {
    bar: ProgressBar,
    item: String,
}

impl Progress {
    fn new() -> Self {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}<{eta_precise}] {bar:30} {pos}/{len} continuations  {msg}",
            )
            .expect("valid progress template"),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(250));
        Progress {
            bar,
            item: String::new(),
        }
    }

    fn say(&self, line: String) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }
}

impl runner::Observer for Progress {
    fn planned(&mut self, to_run: usize, done: usize, continuations: usize) {
        self.bar.set_length(continuations as u64);
        self.say(format!(
            "{to_run} items to run ({continuations} continuations), {done} already done"
        ));
    }

    fn item_started(&mut self, n: usize, of: usize, key: &ItemKey, rounds: usize) {
        self.item = format!("item {n}/{of} {key}");
        self.bar.set_message(format!("{} (round 0/{rounds})", self.item));
    }

    fn round_finished(&mut self, _key: &ItemKey, round: usize, rounds: usize, population: usize) {
        self.bar.inc(population as u64);
        self.bar
            .set_message(format!("{} (round {}/{rounds})", self.item, round + 1));
    }

    fn item_finished(&mut self, r: &Record) {
        let m = &r.metrics;
        let num = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "–".into());
        self.say(format!(
            "{}: Vendi {:.2}, fluency {}, mean reward {}, pool Vendi {:.2}, masked {:.0}% ({:.1} s)",
            self.item,
            m.vendi,
            num(m.mean_fluency),
            num(m.mean_reward),
            r.pool.vendi,
            100.0 * m.masked_share,
            r.timing.item_seconds
        ));
    }
}
