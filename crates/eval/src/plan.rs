//! The plan of a run: its settings, prompt sets and methods, the (prompt, method) items
//! they make, each item's seed, and the slice of them a shard runs.
//!
//! **Items** are listed in a fixed order: sets in the order given, prompts in file order,
//! and for each prompt the methods in the order given. An item's key is (set name, prompt
//! id, method label).
//!
//! **Seeds.** Every random choice of an item flows from its seed,
//! [`item_seed`]`(seed, set, prompt id)`: a hash of the run's `--seed` and the prompt's
//! identity, never of its position in the run, so a resumed, sharded or `--limit`ed run
//! gives each item exactly what an uninterrupted full run gives it. All methods of one
//! prompt share the seed: the perturbation methods share the latent map (basis) and the
//! calibrated scale, and the sampling methods the per-candidate sampling seeds (common
//! random numbers across temperatures).
//!
//! **Shards.** `--shard I/N` (`0 <= I < N`) runs the items whose position `p` in the full
//! list has `p mod N = I` (round-robin): shards differ by at most one item, and each
//! gets a share of every set and method.

use std::fmt;
use std::str::FromStr;

use latentevo_engine::SearchConfig;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{EvalError, Result};
use crate::method::{MethodKind, MethodSpec};
use crate::prompts::{Prompt, PromptSet};
use crate::store::{results_file_name, Manifest, FORMAT};

/// The settings every item of a run shares.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// Continuations per item (`--budget`); `sample` generates K instead.
    pub budget: usize,
    /// The search settings every method starts from: the engine's defaults for the
    /// model with the run's flags applied (population, K in `ideas`, tokens, layer,
    /// basis, reward, ...). `seed` is the run's seed; each item uses [`item_seed`].
    pub defaults: SearchConfig,
    /// Cosine threshold of the distinct-ideas metric (the greedy partition).
    pub distinct_threshold: f64,
    /// The model as the run names it (a canonical path, a hub id, or `default`).
    pub model: String,
    /// The embedder (canonical path or `default`).
    pub embedder: String,
    /// `cpu` or `cuda`.
    pub device: String,
    /// The working dtype (`f32`, `bf16`, `f16`).
    pub dtype: String,
}

/// A method of the plan with its label and settings.
#[derive(Debug, Clone)]
pub struct Method {
    /// The spec.
    pub spec: MethodSpec,
    /// Its label (the canonical spec text).
    pub label: String,
    /// Its search settings (the run's seed; each item uses its own).
    pub config: SearchConfig,
}

/// The key of one (prompt, method) item.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ItemKey {
    /// The prompt set's name.
    pub set: String,
    /// The prompt's id.
    pub prompt_id: String,
    /// The method's label.
    pub method: String,
}

impl fmt::Display for ItemKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} {}", self.set, self.prompt_id, self.method)
    }
}

/// One item of the plan, by index.
#[derive(Debug, Clone)]
pub struct Item {
    /// Index into [`Plan::sets`].
    pub set: usize,
    /// Index into that set's prompts.
    pub prompt: usize,
    /// Index into [`Plan::methods`].
    pub method: usize,
    /// Position in the full item list.
    pub position: usize,
    /// Its key.
    pub key: ItemKey,
}

/// A slice of the items: shard `index` of `count` (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// This shard, `0..count`.
    pub index: usize,
    /// Shards in all.
    pub count: usize,
}

impl Shard {
    /// Whether the item at `position` of the full list belongs to this shard.
    pub fn contains(&self, position: usize) -> bool {
        position % self.count == self.index
    }
}

impl FromStr for Shard {
    type Err = EvalError;
    /// `I/N` with `0 <= I < N`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = |m: String| EvalError::argument("shard", m);
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| bad(format!("expected I/N (e.g. 0/4), got `{s}`")))?;
        let parse = |t: &str| {
            t.trim()
                .parse::<usize>()
                .map_err(|_| bad(format!("expected I/N with whole numbers, got `{s}`")))
        };
        let (index, count) = (parse(i)?, parse(n)?);
        if count == 0 || index >= count {
            return Err(bad(format!(
                "shard index must be in 0..N (0-based), got {index}/{count}"
            )));
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Everything a run does: settings, prompt sets (after `--limit`) and methods.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The shared settings.
    pub settings: RunSettings,
    /// The prompt sets.
    pub sets: Vec<PromptSet>,
    /// The methods.
    pub methods: Vec<Method>,
    /// `--limit`: the first N prompts of each set, if given.
    pub limit: Option<usize>,
}

impl Plan {
    /// Builds the plan: applies `limit`, computes each method's settings and checks the
    /// budget, set names and methods.
    ///
    /// # Errors
    ///
    /// [`EvalError::Argument`] for a bad budget, population or K; [`EvalError::PromptSet`]
    /// for two sets of one name; [`EvalError::Method`] for a method listed twice or two
    /// methods with the same settings.
    pub fn new(
        settings: RunSettings,
        mut sets: Vec<PromptSet>,
        specs: &[MethodSpec],
        limit: Option<usize>,
    ) -> Result<Plan> {
        if settings.budget < 2 {
            return Err(EvalError::argument(
                "budget",
                format!(
                    "must be at least 2 continuations per item, got {}",
                    settings.budget
                ),
            ));
        }
        if settings.defaults.population < 2 {
            return Err(EvalError::argument(
                "population",
                format!("must be at least 2, got {}", settings.defaults.population),
            ));
        }
        if settings.defaults.ideas < 1 {
            return Err(EvalError::argument("top-k", "must be at least 1, got 0"));
        }
        if !(settings.distinct_threshold > 0.0 && settings.distinct_threshold <= 1.0) {
            return Err(EvalError::argument(
                "distinct-threshold",
                format!("must be in (0, 1], got {}", settings.distinct_threshold),
            ));
        }
        if limit == Some(0) {
            return Err(EvalError::argument("limit", "must be at least 1, got 0"));
        }
        for (i, s) in sets.iter().enumerate() {
            if let Some(other) = sets[..i].iter().find(|o| o.name == s.name) {
                return Err(EvalError::PromptSet {
                    path: s.path.clone(),
                    message: format!(
                        "two prompt sets are named `{}` ({} and {}): sets are named by their file stem",
                        s.name,
                        other.path.display(),
                        s.path.display()
                    ),
                });
            }
        }
        if let Some(n) = limit {
            for s in &mut sets {
                s.truncate(n);
            }
        }
        let mut methods: Vec<Method> = Vec::new();
        for spec in specs {
            let label = spec.to_string();
            let config = spec.config(&settings.defaults, settings.budget)?;
            if methods.iter().any(|m| m.label == label) {
                return Err(EvalError::Method(format!("`{label}` is listed twice")));
            }
            let json = serde_json::to_value(&config).unwrap_or(Value::Null);
            if let Some(twin) = methods.iter().find(|m| {
                m.spec.kind == spec.kind && serde_json::to_value(&m.config).unwrap_or(Value::Null) == json
            }) {
                return Err(EvalError::Method(format!(
                    "`{}` and `{label}` have the same settings (one of them is the default)",
                    twin.label
                )));
            }
            methods.push(Method {
                spec: spec.clone(),
                label,
                config,
            });
        }
        if methods.is_empty() {
            return Err(EvalError::Method("no method given".into()));
        }
        Ok(Plan {
            settings,
            sets,
            methods,
            limit,
        })
    }

    /// Checks every method's settings against a model of `num_layers` layers (and each
    /// prompt's own reward with them).
    ///
    /// # Errors
    ///
    /// [`EvalError::MethodConfig`] naming the method and the setting.
    pub fn validate(&self, num_layers: usize) -> Result<()> {
        for m in &self.methods {
            m.config
                .validate(num_layers)
                .map_err(|source| EvalError::MethodConfig {
                    method: m.label.clone(),
                    source: Box::new(source),
                })?;
        }
        Ok(())
    }

    /// Every item, in the fixed order (see the module docs).
    pub fn items(&self) -> Vec<Item> {
        let mut out = Vec::new();
        for (si, set) in self.sets.iter().enumerate() {
            for (pi, prompt) in set.prompts.iter().enumerate() {
                for (mi, method) in self.methods.iter().enumerate() {
                    out.push(Item {
                        set: si,
                        prompt: pi,
                        method: mi,
                        position: out.len(),
                        key: ItemKey {
                            set: set.name.clone(),
                            prompt_id: prompt.id.clone(),
                            method: method.label.clone(),
                        },
                    });
                }
            }
        }
        out
    }

    /// The items of one shard (all items for `None`), in the fixed order.
    pub fn shard_items(&self, shard: Option<Shard>) -> Vec<Item> {
        self.items()
            .into_iter()
            .filter(|i| shard.is_none_or(|s| s.contains(i.position)))
            .collect()
    }

    /// The prompt of an item.
    pub fn prompt(&self, item: &Item) -> &Prompt {
        &self.sets[item.set].prompts[item.prompt]
    }

    /// An item's search settings: its method's, with the item's seed, and the prompt's
    /// own reward unless the method sets one.
    pub fn item_config(&self, item: &Item) -> SearchConfig {
        let method = &self.methods[item.method];
        let prompt = self.prompt(item);
        let mut c = method.config.clone();
        c.seed = item_seed(self.settings.defaults.seed, &item.key.set, &item.key.prompt_id);
        if method.spec.overrides.reward.is_none() {
            if let Some(r) = &prompt.reward {
                c.reward = r.clone();
            }
        }
        c
    }

    /// Continuations an item generates.
    pub fn item_continuations(&self, item: &Item) -> usize {
        self.methods[item.method].config.budget()
    }

    /// The manifest of this plan for `shard` (see [`Manifest`]).
    pub fn manifest(&self, shard: Option<Shard>, command: Option<String>) -> Manifest {
        let (configuration, plan) = self.describe();
        Manifest {
            format: FORMAT,
            version: env!("CARGO_PKG_VERSION").to_string(),
            configuration,
            plan,
            shard,
            items: self.shard_items(shard).len(),
            results: results_file_name(shard),
            merged_from: None,
            prompt_problems: self
                .sets
                .iter()
                .flat_map(|s| s.problems.iter().map(|p| p.to_string()))
                .collect(),
            command,
        }
    }

    /// The run's record of itself: `configuration` (what every item's result depends on)
    /// and `plan` (which items there are). See [`Manifest`].
    pub fn describe(&self) -> (Value, Value) {
        let s = &self.settings;
        let configuration = json!({
            "model": s.model,
            "embedder": s.embedder,
            "device": s.device,
            "dtype": s.dtype,
            "budget": s.budget,
            "population": s.defaults.population,
            "top_k": s.defaults.ideas,
            "max_new_tokens": s.defaults.max_new_tokens,
            "seed": s.defaults.seed,
            "distinct_threshold": s.distinct_threshold,
            "defaults": s.defaults,
        });
        let sets: Vec<Value> = self
            .sets
            .iter()
            .map(|set| {
                json!({
                    "name": set.name,
                    "file": set.path.file_name().map(|f| f.to_string_lossy().into_owned()),
                    "prompts": set.prompts.len(),
                    "fingerprint": set.fingerprint(),
                    "ids": set.prompts.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
                })
            })
            .collect();
        let methods: Vec<Value> = self
            .methods
            .iter()
            .map(|m| {
                json!({
                    "label": m.label,
                    "kind": m.spec.kind,
                    "overrides": m.spec.overrides,
                    "config": m.config,
                })
            })
            .collect();
        let plan = json!({
            "sets": sets,
            "limit": self.limit,
            "methods": methods,
            "items": self.sets.iter().map(|s| s.prompts.len()).sum::<usize>() * self.methods.len(),
        });
        (configuration, plan)
    }
}

/// Whether a method is on sampling's curve: `best-of-n` with no override but `t`.
pub fn on_sampling_curve(spec: &MethodSpec) -> bool {
    spec.kind == MethodKind::BestOfN && spec.keys().iter().all(|k| *k == "t")
}

/// The seed of an item: a stable hash (FNV-1a 64 of the lengths and bytes, then a
/// SplitMix64 finaliser) of the run's seed, the set's name and the prompt's id.
///
/// ```
/// use latentevo_eval::item_seed;
/// assert_eq!(item_seed(0, "ideas", "a"), item_seed(0, "ideas", "a"));
/// assert_ne!(item_seed(0, "ideas", "a"), item_seed(1, "ideas", "a"));
/// assert_ne!(item_seed(0, "ideas", "a"), item_seed(0, "aut", "a"));
/// ```
pub fn item_seed(seed: u64, set: &str, prompt_id: &str) -> u64 {
    stable_hash(seed, &[set, prompt_id])
}

/// FNV-1a 64 over `seed` and the length-prefixed parts, then SplitMix64's finaliser.
pub(crate) fn stable_hash(seed: u64, parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(&seed.to_le_bytes());
    for p in parts {
        eat(&(p.len() as u64).to_le_bytes());
        eat(p.as_bytes());
    }
    let mut z = h;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::method::parse_methods;
    use std::path::Path;

    pub(crate) fn settings() -> RunSettings {
        let mut defaults = SearchConfig::for_layers(4);
        defaults.population = 4;
        defaults.ideas = 3;
        RunSettings {
            budget: 8,
            defaults,
            distinct_threshold: 0.85,
            model: "m".into(),
            embedder: "e".into(),
            device: "cpu".into(),
            dtype: "f32".into(),
        }
    }

    fn set(name: &str, n: usize) -> PromptSet {
        let text: String = (0..n)
            .map(|i| format!("{{\"id\": \"p{i}\", \"prompt\": \"question {i}\"}}\n"))
            .collect();
        PromptSet::parse(name, Path::new(name), &text).unwrap()
    }

    #[test]
    fn shards_partition_the_items_round_robin() {
        let methods = parse_methods("diffevo,best-of-n[t=0.5],sample").unwrap();
        let plan = Plan::new(settings(), vec![set("a", 3), set("b", 2)], &methods, None).unwrap();
        let all = plan.items();
        assert_eq!(all.len(), 15);
        assert_eq!(all[4].key.to_string(), "a/p1 best-of-n[t=0.5]");
        let mut seen = Vec::new();
        for i in 0..4 {
            let shard: Shard = format!("{i}/4").parse().unwrap();
            let items = plan.shard_items(Some(shard));
            assert!(items.len() == 3 || items.len() == 4);
            seen.extend(items.into_iter().map(|i| i.position));
        }
        seen.sort();
        assert_eq!(seen, (0..15).collect::<Vec<_>>());
        assert!("4/4".parse::<Shard>().is_err());
        assert!("1/0".parse::<Shard>().is_err());
        assert!("x"
            .parse::<Shard>()
            .unwrap_err()
            .to_string()
            .starts_with("--shard: "));
    }

    #[test]
    fn seeds_depend_on_identity_not_position() {
        let methods = parse_methods("diffevo,random").unwrap();
        let full = Plan::new(settings(), vec![set("a", 3)], &methods, None).unwrap();
        let limited = Plan::new(settings(), vec![set("a", 3)], &methods, Some(2)).unwrap();
        let f = full.items();
        let l = limited.items();
        assert_eq!(l.len(), 4);
        for (a, b) in f.iter().zip(&l) {
            assert_eq!(a.key, b.key);
            assert_eq!(full.item_config(a).seed, limited.item_config(b).seed);
        }
        // Methods of one prompt share the seed (same latent map); prompts differ.
        assert_eq!(full.item_config(&f[0]).seed, full.item_config(&f[1]).seed);
        assert_ne!(full.item_config(&f[0]).seed, full.item_config(&f[2]).seed);
    }

    #[test]
    fn duplicate_methods_and_sets_are_errors() {
        let m = parse_methods("best-of-n,best-of-n[t=1]").unwrap();
        let e = Plan::new(settings(), vec![set("a", 1)], &m, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("same settings"), "{e}");
        let m = parse_methods("diffevo").unwrap();
        let e = Plan::new(settings(), vec![set("a", 1), set("a", 2)], &m, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("two prompt sets are named `a`"), "{e}");
        let mut s = settings();
        s.budget = 6;
        let e = Plan::new(s, vec![set("a", 1)], &m, None).unwrap_err().to_string();
        assert!(e.starts_with("--budget: 6 is not a multiple"), "{e}");
    }
}
