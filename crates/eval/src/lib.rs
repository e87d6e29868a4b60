//! # latentevo-eval
//!
//! The batch evaluation behind `latentevo eval`: does the latent-thought search find
//! better and more diverse ideas than sampling at a temperature, or best-of-N, at an
//! equal budget?
//!
//! - [`prompts`]: prompt sets (JSONL: `id`, `prompt`, optional `reward`);
//! - [`method`]: the methods (`diffevo`, `random`, `cmaes`, `openes`, `best-of-n`,
//!   `sample`) with their overrides (`diffevo[kl=0.05,layer=5]`) and the sweep sugar;
//! - [`plan`]: the (prompt, method) items, their seeds, and shards;
//! - [`runner`]: one item through the [`latentevo_engine::Engine`], and a whole run;
//! - [`metrics`]: the metrics of the K ideas and of the pool of candidates;
//! - [`record`]: one results line; [`store`]: the crash-safe results directory;
//! - [`merge`]: reading directories back, merging shards;
//! - [`stats`]: bootstrap intervals and interpolation; [`summary`]: `summary.md`,
//!   `summary.json` and the plots.
//!
//! A whole evaluation on a tiny fixture model (random weights: gibberish text, so most
//! candidates are masked as degenerate; the default model writes real answers):
//!
//! ```
//! use latentevo_eval::{method::parse_methods, runner, summary, Plan, PromptSet, ResultsStore, RunSettings};
//! use latentevo_engine::{Engine, SearchConfig};
//! let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
//! let model = latentevo_model::load(&format!("{repo}/models/tiny/qwen3_moe"), &Default::default())?;
//! let embedder = latentevo_reward::Embedder::load(format!("{repo}/models/tiny/minilm").as_ref(), &candle_core::Device::Cpu)?;
//! let mut defaults = SearchConfig::for_layers(model.model.num_layers());
//! defaults.population = 2;
//! defaults.ideas = 2;
//! defaults.max_new_tokens = 4;
//! let engine = Engine::new(model, embedder)?;
//! let settings = RunSettings {
//!     budget: 4,
//!     defaults,
//!     distinct_threshold: 0.85,
//!     model: "qwen3_moe".into(),
//!     embedder: "minilm".into(),
//!     device: "cpu".into(),
//!     dtype: "f32".into(),
//! };
//! let set = PromptSet::parse("demo", "demo.jsonl".as_ref(), "{\"id\": \"brick\", \"prompt\": \"Uses for a brick?\"}\n")?;
//! let plan = Plan::new(settings, vec![set], &parse_methods("diffevo,best-of-n[t=0.7]")?, None)?;
//! plan.validate(engine.model().model.num_layers())?;
//! let dir = tempfile::tempdir()?;
//! let manifest = plan.manifest(None, None);
//! let mut store = ResultsStore::open(dir.path(), &manifest, false)?;
//! let report = runner::run(&engine, &plan, None, &mut store, &mut runner::Quiet, None)?;
//! assert_eq!(report.ran, 2);
//! let results = latentevo_eval::merge::read_dir(dir.path())?;
//! let s = summary::write_summary(dir.path(), &manifest, &results.records, Default::default())?;
//! assert_eq!(s.items, 2);
//! assert!(dir.path().join("summary.md").exists());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

pub mod error;
pub mod merge;
pub mod method;
pub mod metrics;
pub mod plan;
pub mod prompts;
pub mod record;
pub mod runner;
pub mod stats;
pub mod store;
pub mod summary;

pub use error::{EvalError, Result};
pub use method::{MethodKind, MethodSpec};
pub use plan::{item_seed, Item, ItemKey, Method, Plan, RunSettings, Shard};
pub use prompts::{Prompt, PromptSet};
pub use record::Record;
pub use store::{results_file_name, Manifest, ResultsStore};
