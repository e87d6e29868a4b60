//! `latentevo ideas PROMPT`: the latent-thought search, prompt in, ideas out.

use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use latentevo_engine::{Engine, EngineError, Scale, SearchConfig, SearchResult, StrategyKind};
use latentevo_reward::Embedder;

use super::{usage, ModelArgs, SearchFlags};

/// Arguments of `latentevo ideas`.
#[derive(Debug, clap::Args)]
pub struct IdeasArgs {
    /// The prompt (a question or request; the model's chat template is applied).
    pub prompt: String,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub search: SearchFlags,
    /// Candidates per round.
    #[arg(long, default_value_t = 16)]
    pub population: usize,
    /// Rounds (populations evaluated; the budget is population x rounds continuations).
    #[arg(long, default_value_t = 4)]
    pub rounds: usize,
    /// Target mean KL (nats/token) between perturbed and unperturbed next-token
    /// distributions; the scale is calibrated to it [default: 0.1].
    #[arg(long, conflicts_with = "scale", allow_negative_numbers = true)]
    pub kl_target: Option<f64>,
    /// A raw perturbation scale (relative to the hidden state's RMS), instead of calibrating.
    #[arg(long, allow_negative_numbers = true)]
    pub scale: Option<f64>,
    /// No perturbation: plain sampling at --temperature, scored and selected like the
    /// search (the baseline to compare it with).
    #[arg(long, conflicts_with_all = ["scale", "kl_target"], requires = "temperature")]
    pub no_perturbation: bool,
    /// Optimiser of the latents: diffevo, cmaes, openes or random.
    #[arg(long, default_value = "diffevo")]
    pub strategy: String,
    /// Diffusion Evolution's fitness temperature T in exp(A / T): higher is softer
    /// selection (docs/eval-results.md measures 3 with --population 8).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub fitness_temperature: f64,
    /// Sample at this temperature (one seed per candidate) instead of greedy decoding.
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Print the result as JSON (config, per-round statistics, ideas with scores and latents).
    #[arg(long)]
    pub json: bool,
    /// Write every candidate of every round as JSON lines to FILE.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Write a PNG of reward and diversity per round and the latents per round to FILE.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

impl IdeasArgs {
    /// The search settings the flags describe (checked before the model loads, except the
    /// layer's range, which needs the model).
    fn config(&self, num_layers: usize) -> Result<SearchConfig> {
        let mut cfg = SearchConfig::for_layers(num_layers);
        self.search.apply(&mut cfg)?;
        cfg.population = self.population;
        cfg.rounds = self.rounds;
        cfg.strategy = self.strategy.parse::<StrategyKind>().map_err(usage)?;
        cfg.fitness_temperature = self.fitness_temperature;
        cfg.scale = match (self.scale, self.kl_target) {
            _ if self.no_perturbation => Scale::None,
            (Some(s), _) => Scale::Fixed(s),
            (None, Some(kl)) => Scale::KlTarget(kl),
            (None, None) => cfg.scale,
        };
        cfg.temperature = self.temperature;
        Ok(cfg)
    }
}

/// Runs `latentevo ideas`.
pub fn run(args: IdeasArgs) -> Result<()> {
    // Check every flag that does not need the model before spending time loading it.
    let provisional = args.config(usize::MAX)?;
    if let Err(e) = provisional.validate(usize::MAX) {
        return Err(usage(e));
    }
    for path in [&args.trace, &args.plot].into_iter().flatten() {
        check_writable(path)?;
    }
    let loaded = args.model.load()?;
    let cfg = args.config(loaded.model.num_layers())?;
    let embedder_dir = match &args.search.embedder {
        Some(dir) => dir.clone(),
        None => latentevo_reward::ensure_minilm(true)
            .context("preparing the sentence-embedding model (pass --embedder DIR to use another)")?,
    };
    let embedder = Embedder::load(&embedder_dir, loaded.model.device())
        .with_context(|| format!("loading the embedder from {}", embedder_dir.display()))?;
    let engine = Engine::new(loaded, embedder)?;

    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        // A second Ctrl-C ends the process at once.
        let _ = ctrlc::set_handler(move || {
            if flag.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!("\ninterrupted: finishing this round, then printing the best ideas so far (Ctrl-C again to quit)");
        });
    }
    let bar = ProgressBar::new(cfg.rounds as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} round {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}")
            .expect("valid progress template"),
    );
    bar.set_message("base pass and calibration");
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let mut on_round = |report: &latentevo_engine::RoundReport| {
        let s = report.stats;
        bar.set_position((s.round + 1) as u64);
        bar.set_message(format!(
            "mean reward {:.3}, best {:.3}, diversity {:.3}, masked {}",
            s.mean_reward, s.max_reward, s.diversity, s.masked
        ));
        if interrupted.load(Ordering::SeqCst) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    let result = engine.run(&args.prompt, &cfg, &mut on_round);
    bar.finish_and_clear();
    let result = result.map_err(|e| match e {
        EngineError::InvalidConfig { .. } => usage(e),
        other => anyhow::Error::new(other),
    })?;

    if let Some(path) = &args.trace {
        write_atomically(path, |out| {
            for c in &result.candidates {
                serde_json::to_writer(&mut *out, c)?;
                out.write_all(b"\n")?;
            }
            Ok(())
        })?;
    }
    if let Some(path) = &args.plot {
        plot(path, &result)?;
    }
    if args.json {
        let mut json = serde_json::to_value(&result)?;
        if let Some(obj) = json.as_object_mut() {
            obj.remove("candidates");
        }
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print_human(&result);
    }
    for warning in &result.warnings {
        eprintln!("warning: {warning}");
    }
    Ok(())
}

fn print_human(r: &SearchResult) {
    let c = &r.config;
    println!("Prompt: {}", r.prompt);
    println!("Unperturbed answer: {}", one_line(&r.reference));
    let scale = match r.calibration.target_kl {
        Some(t) => format!(
            "s = {:.3} (calibrated to KL {t}, achieved {:.3})",
            r.calibration.scale, r.calibration.achieved_kl
        ),
        None if c.scale == Scale::None => "no perturbation (plain sampling)".to_string(),
        None => format!("s = {:.3} (given)", r.calibration.scale),
    };
    println!(
        "Search: layer {}, {} x {} rounds, m = {}, basis {}, inject {}, routing {}, {}, {}; reward {}",
        c.layer,
        c.population,
        c.rounds,
        c.latent_dim,
        c.basis,
        c.inject,
        c.routing,
        c.strategy,
        scale,
        c.reward
    );
    println!();
    println!(
        "{:>5} {:>9} {:>9} {:>9} {:>8} {:>7} {:>7} {:>8}",
        "round", "mean", "best", "diversity", "KL", "masked", "drift", "seconds"
    );
    for s in &r.rounds {
        let t = &s.seconds;
        println!(
            "{:>5} {:>9.3} {:>9.3} {:>9.3} {:>8.3} {:>7} {:>7.3} {:>8.1}",
            s.round + 1,
            s.mean_reward,
            s.max_reward,
            s.diversity,
            s.mean_kl,
            s.masked,
            s.drift,
            t.prefill + t.generation + t.reward + t.update
        );
    }
    if r.stopped_early {
        println!("(stopped early)");
    }
    println!();
    let st = &r.idea_stats;
    println!(
        "Ideas ({} of {} candidates, {:.0} s): {} distinct at cosine {}, mean distance {:.3}, Vendi {:.2}, fluency {:.2}",
        r.ideas.len(),
        r.candidates.len(),
        r.seconds,
        st.distinct,
        c.dedup_threshold,
        st.mean_pairwise_distance,
        st.vendi,
        st.mean_fluency
    );
    for (i, idea) in r.ideas.iter().enumerate() {
        let terms: Vec<String> = idea.terms.iter().map(|(n, v)| format!("{n} {v:.3}")).collect();
        println!();
        println!("{}. [reward {:.3}: {}]", i + 1, idea.reward, terms.join(", "));
        println!("{}", idea.text.trim());
    }
}

fn one_line(text: &str) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > 160 {
        format!("{}...", flat.chars().take(160).collect::<String>())
    } else {
        flat
    }
}

fn plot(path: &Path, r: &SearchResult) -> Result<()> {
    let rounds: Vec<latentevo_plot::RoundSummary> = r
        .rounds
        .iter()
        .map(|s| latentevo_plot::RoundSummary {
            round: s.round,
            mean_reward: s.mean_reward,
            max_reward: s.max_reward,
            diversity: s.diversity,
        })
        .collect();
    let mut latents: Vec<Vec<Vec<f64>>> = vec![Vec::new(); r.rounds.len()];
    for c in &r.candidates {
        latents[c.round].push(c.latent.clone());
    }
    latentevo_plot::search_rounds_png(
        path,
        &rounds,
        &latents,
        &format!("latentevo ideas: {}", one_line(&r.prompt)),
    )
    .with_context(|| format!("--plot {}", path.display()))
}

/// The directory of `path` exists, so the output can be written at the end.
fn check_writable(path: &Path) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(usage(format!(
            "{}: directory {} does not exist",
            path.display(),
            dir.display()
        )));
    }
    Ok(())
}

/// Writes through a temporary file in the same directory, renamed into place at the end.
fn write_atomically(path: &Path, body: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp =
        tempfile::NamedTempFile::new_in(dir).with_context(|| format!("writing {}", path.display()))?;
    {
        let mut out = std::io::BufWriter::new(tmp.as_file_mut());
        body(&mut out)?;
        out.flush()?;
    }
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
