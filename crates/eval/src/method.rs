//! Methods: what produces the K ideas of a prompt, and their settings.
//!
//! A method is written `NAME` or `NAME[KEY=VALUE,...]`:
//!
//! | name | what it is | budget |
//! |---|---|---|
//! | `diffevo` | the search: Diffusion Evolution of the latents | `budget / population` rounds of `population` |
//! | `random` | fresh `N(0, I)` latents every round: the same latent map and calibrated scale, no evolution | as diffevo |
//! | `cmaes` | CMA-ES on the same latent | as diffevo |
//! | `openes` | OpenAI-style evolution strategy on the same latent | as diffevo |
//! | `best-of-n` | plain sampling at temperature `t` (no perturbation), N = budget continuations in batches of `population`, K picked by the same selector and reward | as diffevo |
//! | `sample` | plain sampling's first K continuations, no selection: the everyday baseline | K continuations |
//!
//! Keys (aliases in brackets), each checked against the method:
//!
//! | key | meaning | methods |
//! |---|---|---|
//! | `kl` (`kl-target`) | KL target the scale is calibrated to | perturbation |
//! | `scale` | a raw scale instead of calibrating | perturbation |
//! | `t` (`temperature`) | sampling temperature (perturbation methods: sample the perturbed model at `t` instead of greedy decoding; best-of-n and sample: default 1) | all |
//! | `top-p` | nucleus mass when sampling | all |
//! | `layer`, `basis`, `shaping`, `inject`, `routing`, `m` (`latent-dim`), `kl-guard` | as the `ideas` flags | perturbation |
//! | `population` | candidates per round (rounds = budget / population) | all but sample |
//! | `fitness-temperature`, `kernel-dim` | Diffusion Evolution's fitness temperature and kernel projection | diffevo |
//! | `mmr` (`mmr-lambda`) | the selector's reward/diversity trade-off | all but sample |
//! | `reward` | this method's own reward, quoted: `reward='dat + 0.1*fluency'` | all |
//!
//! A method's *label* is its canonical text: the name, then the keys it sets in the
//! order of the table above, numbers in their shortest form, aliases resolved
//! (`diffevo[layer=5, kl=0.20]` is labelled `diffevo[kl=0.2,layer=5]`). Labels are the
//! methods' keys in the results.
//!
//! ```
//! use latentevo_eval::method::{parse_methods, MethodKind};
//! let methods = parse_methods("diffevo[layer=5, kl=0.20],best-of-n[t=0.3],sample")?;
//! assert_eq!(methods[0].to_string(), "diffevo[kl=0.2,layer=5]");
//! assert_eq!(methods[1].kind, MethodKind::BestOfN);
//! assert!(parse_methods("diffevo[colour=red]").unwrap_err().to_string().contains("`colour`"));
//! # Ok::<(), latentevo_eval::EvalError>(())
//! ```

use std::fmt;
use std::str::FromStr;

use latentevo_engine::{Basis, Inject, RoutingPolicy, Scale, SearchConfig, Shaping, StrategyKind};
use latentevo_reward::RewardSpec;
use serde::Serialize;

use crate::error::{EvalError, Result};

/// The kinds of method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MethodKind {
    /// The search: Diffusion Evolution of the latents.
    DiffEvo,
    /// Fresh random latents every round (same latent map and scale, no evolution).
    Random,
    /// CMA-ES on the latent.
    CmaEs,
    /// OpenAI-style evolution strategy on the latent.
    OpenEs,
    /// Plain temperature sampling, the budget's continuations, K picked by the selector.
    BestOfN,
    /// Plain temperature sampling's first K continuations, no selection.
    Sample,
}

/// Method names as written in specs.
pub const METHOD_NAMES: [&str; 6] = ["diffevo", "random", "cmaes", "openes", "best-of-n", "sample"];

impl MethodKind {
    /// The name as written in specs.
    pub fn name(self) -> &'static str {
        match self {
            MethodKind::DiffEvo => "diffevo",
            MethodKind::Random => "random",
            MethodKind::CmaEs => "cmaes",
            MethodKind::OpenEs => "openes",
            MethodKind::BestOfN => "best-of-n",
            MethodKind::Sample => "sample",
        }
    }

    /// Whether the method perturbs the hidden states (else it is plain sampling).
    pub fn perturbs(self) -> bool {
        !matches!(self, MethodKind::BestOfN | MethodKind::Sample)
    }

    fn strategy(self) -> StrategyKind {
        match self {
            MethodKind::DiffEvo => StrategyKind::DiffEvo,
            MethodKind::CmaEs => StrategyKind::CmaEs,
            MethodKind::OpenEs => StrategyKind::OpenEs,
            // Without a perturbation the latents do nothing; fresh ones cost no update.
            MethodKind::Random | MethodKind::BestOfN | MethodKind::Sample => StrategyKind::Random,
        }
    }
}

impl FromStr for MethodKind {
    type Err = EvalError;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "diffevo" => MethodKind::DiffEvo,
            "random" => MethodKind::Random,
            "cmaes" => MethodKind::CmaEs,
            "openes" => MethodKind::OpenEs,
            "best-of-n" => MethodKind::BestOfN,
            "sample" => MethodKind::Sample,
            other => {
                return Err(EvalError::Method(format!(
                    "unknown method `{other}` (known: {})",
                    METHOD_NAMES.join(", ")
                )))
            }
        })
    }
}

impl Serialize for MethodKind {
    /// As its name in specs (`diffevo`, `best-of-n`, ...).
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl fmt::Display for MethodKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The settings a method spec overrides; `None` keeps the run's default.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Overrides {
    /// KL target (`kl`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kl: Option<f64>,
    /// Raw scale (`scale`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale: Option<f64>,
    /// Sampling temperature (`t`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub t: Option<f64>,
    /// Nucleus mass (`top-p`).
    #[serde(skip_serializing_if = "Option::is_none", rename = "top-p")]
    pub top_p: Option<f64>,
    /// Perturbed layer (`layer`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer: Option<usize>,
    /// Basis (`basis`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub basis: Option<Basis>,
    /// Shaping (`shaping`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shaping: Option<Shaping>,
    /// Injection positions (`inject`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inject: Option<Inject>,
    /// Routing policy (`routing`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routing: Option<RoutingPolicy>,
    /// Candidates per round (`population`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub population: Option<usize>,
    /// Latent dimension (`m`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub m: Option<usize>,
    /// Diffusion Evolution's fitness temperature (`fitness-temperature`).
    #[serde(skip_serializing_if = "Option::is_none", rename = "fitness-temperature")]
    pub fitness_temperature: Option<f64>,
    /// Diffusion Evolution's kernel projection dimension (`kernel-dim`).
    #[serde(skip_serializing_if = "Option::is_none", rename = "kernel-dim")]
    pub kernel_dim: Option<usize>,
    /// The lethal-mutation guard (`kl-guard`).
    #[serde(skip_serializing_if = "Option::is_none", rename = "kl-guard")]
    pub kl_guard: Option<f64>,
    /// The selector's trade-off (`mmr`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mmr: Option<f64>,
    /// The method's own reward (`reward`).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "display_opt")]
    pub reward: Option<RewardSpec>,
}

fn display_opt<S: serde::Serializer>(
    spec: &Option<RewardSpec>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match spec {
        Some(r) => s.collect_str(r),
        None => s.serialize_none(),
    }
}

/// Which methods a key applies to.
#[derive(Clone, Copy, PartialEq)]
enum Applies {
    All,
    Perturbation,
    NotSample,
    DiffEvo,
}

/// The keys in canonical order: (canonical name, aliases, methods it applies to).
const KEYS: [(&str, &[&str], Applies); 16] = [
    ("kl", &["kl-target"], Applies::Perturbation),
    ("scale", &[], Applies::Perturbation),
    ("t", &["temperature"], Applies::All),
    ("top-p", &[], Applies::All),
    ("layer", &[], Applies::Perturbation),
    ("basis", &[], Applies::Perturbation),
    ("shaping", &[], Applies::Perturbation),
    ("inject", &[], Applies::Perturbation),
    ("routing", &[], Applies::Perturbation),
    ("population", &[], Applies::NotSample),
    ("m", &["latent-dim"], Applies::Perturbation),
    ("fitness-temperature", &[], Applies::DiffEvo),
    ("kernel-dim", &[], Applies::DiffEvo),
    ("kl-guard", &[], Applies::Perturbation),
    ("mmr", &["mmr-lambda"], Applies::NotSample),
    ("reward", &[], Applies::All),
];

/// One method: its kind and the settings it overrides. `Display` writes its label.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodSpec {
    /// The kind.
    pub kind: MethodKind,
    /// The overridden settings.
    pub overrides: Overrides,
}

impl MethodSpec {
    /// A method with no overrides.
    pub fn new(kind: MethodKind) -> Self {
        MethodSpec {
            kind,
            overrides: Overrides::default(),
        }
    }

    /// The value of `key` (canonical name) as written in the label, if set.
    fn value_text(&self, key: &str) -> Option<String> {
        let o = &self.overrides;
        let num = |v: Option<f64>| v.map(|v| format!("{v}"));
        let int = |v: Option<usize>| v.map(|v| v.to_string());
        match key {
            "kl" => num(o.kl),
            "scale" => num(o.scale),
            "t" => num(o.t),
            "top-p" => num(o.top_p),
            "layer" => int(o.layer),
            "basis" => o.basis.map(|v| v.to_string()),
            "shaping" => o.shaping.map(|v| v.to_string()),
            "inject" => o.inject.map(|v| v.to_string()),
            "routing" => o.routing.map(|v| v.to_string()),
            "population" => int(o.population),
            "m" => int(o.m),
            "fitness-temperature" => num(o.fitness_temperature),
            "kernel-dim" => int(o.kernel_dim),
            "kl-guard" => num(o.kl_guard),
            "mmr" => num(o.mmr),
            "reward" => o.reward.as_ref().map(|r| quote(&r.to_string())),
            _ => None,
        }
    }

    /// The same method without `key` (canonical name) set: e.g. the family a KL sweep
    /// belongs to.
    pub fn without(&self, key: &str) -> MethodSpec {
        let mut m = self.clone();
        let o = &mut m.overrides;
        match key {
            "kl" => o.kl = None,
            "scale" => o.scale = None,
            "t" => o.t = None,
            _ => {}
        }
        m
    }

    /// The keys this method sets, by canonical name.
    pub fn keys(&self) -> Vec<&'static str> {
        KEYS.iter()
            .map(|(k, _, _)| *k)
            .filter(|k| self.value_text(k).is_some())
            .collect()
    }

    fn set(&mut self, key: &str, value: &str) -> std::result::Result<(), String> {
        let o = &mut self.overrides;
        let number = |lo_open: f64, hi: Option<f64>| -> std::result::Result<f64, String> {
            let v: f64 = value.parse().map_err(|_| format!("`{value}` is not a number"))?;
            if !v.is_finite() || v <= lo_open || hi.is_some_and(|h| v > h) {
                return Err(match hi {
                    Some(h) => format!("must be in ({lo_open}, {h}], got {value}"),
                    None => format!("must be a finite number > {lo_open}, got {value}"),
                });
            }
            Ok(v)
        };
        let count = |min: usize| -> std::result::Result<usize, String> {
            let v: usize = value
                .parse()
                .map_err(|_| format!("`{value}` is not a whole number"))?;
            if v < min {
                return Err(format!("must be at least {min}, got {v}"));
            }
            Ok(v)
        };
        let named = |e: latentevo_engine::EngineError| {
            e.to_string()
                .split_once(": ")
                .map(|(_, m)| m.to_string())
                .unwrap_or_else(|| e.to_string())
        };
        match key {
            "kl" => o.kl = Some(number(0.0, None)?),
            "scale" => o.scale = Some(number(0.0, None)?),
            "t" => o.t = Some(number(0.0, None)?),
            "top-p" => o.top_p = Some(number(0.0, Some(1.0))?),
            "layer" => o.layer = Some(count(0)?),
            "basis" => o.basis = Some(value.parse().map_err(named)?),
            "shaping" => o.shaping = Some(value.parse().map_err(named)?),
            "inject" => o.inject = Some(value.parse().map_err(named)?),
            "routing" => o.routing = Some(value.parse().map_err(named)?),
            "population" => o.population = Some(count(2)?),
            "m" => o.m = Some(count(1)?),
            "fitness-temperature" => o.fitness_temperature = Some(number(0.0, None)?),
            "kernel-dim" => o.kernel_dim = Some(count(1)?),
            "kl-guard" => o.kl_guard = Some(number(0.0, None)?),
            "mmr" => {
                let v: f64 = value.parse().map_err(|_| format!("`{value}` is not a number"))?;
                if !(0.0..=1.0).contains(&v) {
                    return Err(format!("must be in [0, 1], got {value}"));
                }
                o.mmr = Some(v);
            }
            "reward" => {
                o.reward = Some(
                    value
                        .parse::<RewardSpec>()
                        .map_err(|e| format!("does not parse: {e}"))?,
                )
            }
            _ => unreachable!("keys are checked against KEYS first"),
        }
        Ok(())
    }

    /// The method's settings: `base` (the run's defaults, see [`crate::RunSettings`])
    /// with the method's kind and overrides applied, `rounds = budget / population`.
    ///
    /// # Errors
    ///
    /// [`EvalError::Argument`] (`budget`) when the budget is not a multiple of the
    /// method's population.
    pub fn config(&self, base: &SearchConfig, budget: usize) -> Result<SearchConfig> {
        let o = &self.overrides;
        let mut c = base.clone();
        c.strategy = self.kind.strategy();
        if let Some(v) = o.layer {
            c.layer = v;
        }
        if let Some(v) = o.basis {
            c.basis = v;
        }
        if let Some(v) = o.shaping {
            c.shaping = v;
        }
        if let Some(v) = o.inject {
            c.inject = v;
        }
        if let Some(v) = o.routing {
            c.routing = v;
        }
        if let Some(v) = o.m {
            c.latent_dim = v;
        }
        if let Some(v) = o.fitness_temperature {
            c.fitness_temperature = v;
        }
        if let Some(v) = o.kernel_dim {
            c.kernel_dim = Some(v);
        }
        if let Some(v) = o.kl_guard {
            c.kl_guard = v;
        }
        if let Some(v) = o.mmr {
            c.mmr_lambda = v;
        }
        if let Some(v) = o.top_p {
            c.top_p = v;
        }
        if let Some(r) = &o.reward {
            c.reward = r.clone();
        }
        if self.kind.perturbs() {
            c.temperature = o.t;
            if let Some(s) = o.scale {
                c.scale = Scale::Fixed(s);
            } else if let Some(kl) = o.kl {
                c.scale = Scale::KlTarget(kl);
            }
        } else {
            c.scale = Scale::None;
            c.temperature = Some(o.t.unwrap_or(DEFAULT_SAMPLING_TEMPERATURE));
        }
        if self.kind == MethodKind::Sample {
            // Its first K continuations: one round of K (the engine needs at least 2).
            c.population = c.ideas.max(2);
            c.rounds = 1;
        } else {
            c.population = o.population.unwrap_or(base.population);
            if budget < 2 {
                return Err(EvalError::argument(
                    "budget",
                    format!("must be at least 2 continuations per item, got {budget}"),
                ));
            }
            if !budget.is_multiple_of(c.population) || budget < c.population {
                return Err(EvalError::argument(
                    "budget",
                    format!(
                        "{budget} is not a multiple of the population {} of `{self}` (rounds = budget / population; pick a budget like {} or {}, or another population)",
                        c.population,
                        (budget / c.population).max(1) * c.population,
                        (budget / c.population + 1) * c.population
                    ),
                ));
            }
            c.rounds = budget / c.population;
        }
        Ok(c)
    }
}

/// The temperature of `best-of-n` and `sample` when neither `t` nor `--temperatures`
/// gives one.
pub const DEFAULT_SAMPLING_TEMPERATURE: f64 = 1.0;

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

impl fmt::Display for MethodSpec {
    /// The label: `name` or `name[key=value,...]` in canonical key order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.name())?;
        let parts: Vec<String> = KEYS
            .iter()
            .filter_map(|(k, _, _)| self.value_text(k).map(|v| format!("{k}={v}")))
            .collect();
        if !parts.is_empty() {
            write!(f, "[{}]", parts.join(","))?;
        }
        Ok(())
    }
}

impl FromStr for MethodSpec {
    type Err = EvalError;
    fn from_str(text: &str) -> Result<Self> {
        let text = text.trim();
        let err = |m: String| EvalError::Method(format!("`{text}`: {m}"));
        let (name, body) = match text.find('[') {
            None => (text, None),
            Some(open) => {
                let Some(inner) = text[open + 1..].strip_suffix(']') else {
                    return Err(err("expected `]` at the end (NAME[KEY=VALUE,...])".into()));
                };
                (text[..open].trim(), Some(inner))
            }
        };
        if name.is_empty() {
            return Err(EvalError::Method(format!(
                "empty method name in `{text}` (known: {})",
                METHOD_NAMES.join(", ")
            )));
        }
        let kind: MethodKind = name.parse()?;
        let mut spec = MethodSpec::new(kind);
        let Some(body) = body else {
            return Ok(spec);
        };
        let mut seen: Vec<&str> = Vec::new();
        for part in split_top_level(body).map_err(err)? {
            let part = part.trim();
            if part.is_empty() {
                return Err(err("empty setting (two commas, or a trailing comma)".into()));
            }
            let Some((key, value)) = part.split_once('=') else {
                return Err(err(format!("`{part}` is not KEY=VALUE")));
            };
            let (key, value) = (key.trim(), unquote(value.trim()).map_err(err)?);
            let Some((canonical, _, applies)) = KEYS.iter().find(|(k, a, _)| *k == key || a.contains(&key))
            else {
                return Err(err(format!(
                    "unknown key `{key}` (known: {})",
                    KEYS.iter().map(|(k, _, _)| *k).collect::<Vec<_>>().join(", ")
                )));
            };
            let fits = match applies {
                Applies::All => true,
                Applies::Perturbation => kind.perturbs(),
                Applies::NotSample => kind != MethodKind::Sample,
                Applies::DiffEvo => kind == MethodKind::DiffEvo,
            };
            if !fits {
                let why = match applies {
                    Applies::Perturbation => "it perturbs nothing",
                    Applies::NotSample => "it takes the first K continuations as they come",
                    _ => "only diffevo has it",
                };
                return Err(err(format!("`{canonical}` does not apply to {kind} ({why})")));
            }
            if seen.contains(canonical) {
                return Err(err(format!("`{canonical}` is given twice")));
            }
            seen.push(canonical);
            spec.set(canonical, &value)
                .map_err(|m| err(format!("`{canonical}`: {m}")))?;
        }
        if spec.overrides.kl.is_some() && spec.overrides.scale.is_some() {
            return Err(err(
                "`kl` and `scale` exclude each other (calibrate, or give the scale)".into(),
            ));
        }
        Ok(spec)
    }
}

/// Splits on commas outside quotes, brackets and parentheses.
fn split_top_level(s: &str) -> std::result::Result<Vec<String>, String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                cur.push(c);
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '\'' | '"' => {
                    quote = Some(c);
                    cur.push(c);
                }
                '(' | '[' => {
                    depth += 1;
                    cur.push(c);
                }
                ')' | ']' => {
                    depth -= 1;
                    cur.push(c);
                }
                ',' if depth == 0 => parts.push(std::mem::take(&mut cur)),
                _ => cur.push(c),
            },
        }
    }
    if quote.is_some() {
        return Err("unterminated quote".into());
    }
    if depth != 0 {
        return Err("unbalanced brackets or parentheses".into());
    }
    parts.push(cur);
    Ok(parts)
}

/// A value as written: quoted with `'` or `"` (backslash escapes), or bare.
fn unquote(v: &str) -> std::result::Result<String, String> {
    let Some(q) = v.chars().next().filter(|c| *c == '\'' || *c == '"') else {
        return Ok(v.to_string());
    };
    let inner = v[1..]
        .strip_suffix(q)
        .ok_or_else(|| format!("unterminated quote in `{v}`"))?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n) if n == q || n == '\\' => out.push(n),
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// Parses a comma-separated list of methods (`--methods`); commas inside brackets,
/// parentheses and quotes belong to the method.
///
/// # Errors
///
/// [`EvalError::Method`] naming the method, and the key where one is at fault.
pub fn parse_methods(text: &str) -> Result<Vec<MethodSpec>> {
    let parts = split_top_level(text).map_err(|m| EvalError::Method(format!("`{text}`: {m}")))?;
    let methods: Vec<MethodSpec> = parts
        .iter()
        .filter(|p| !p.trim().is_empty())
        .map(|p| p.parse())
        .collect::<Result<_>>()?;
    if methods.is_empty() {
        return Err(EvalError::Method("no method given".into()));
    }
    Ok(methods)
}

/// Expands the sweep sugar: every `best-of-n` and `sample` without `t` becomes one
/// method per temperature of `temperatures`, and every perturbation method without `kl`
/// or `scale` one per KL target of `kl_targets` (empty lists expand nothing). The order
/// is the methods' order, each expanded in the order of its list.
///
/// ```
/// use latentevo_eval::method::{expand, parse_methods};
/// let m = expand(&parse_methods("diffevo,best-of-n,sample[t=0.7]")?, &[0.3, 1.0], &[0.05, 0.1]);
/// let labels: Vec<String> = m.iter().map(|m| m.to_string()).collect();
/// assert_eq!(labels, ["diffevo[kl=0.05]", "diffevo[kl=0.1]", "best-of-n[t=0.3]", "best-of-n[t=1]", "sample[t=0.7]"]);
/// # Ok::<(), latentevo_eval::EvalError>(())
/// ```
pub fn expand(methods: &[MethodSpec], temperatures: &[f64], kl_targets: &[f64]) -> Vec<MethodSpec> {
    let mut out = Vec::new();
    for m in methods {
        let o = &m.overrides;
        if !m.kind.perturbs() && o.t.is_none() && !temperatures.is_empty() {
            for &t in temperatures {
                let mut e = m.clone();
                e.overrides.t = Some(t);
                out.push(e);
            }
        } else if m.kind.perturbs() && o.kl.is_none() && o.scale.is_none() && !kl_targets.is_empty() {
            for &kl in kl_targets {
                let mut e = m.clone();
                e.overrides.kl = Some(kl);
                out.push(e);
            }
        } else {
            out.push(m.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(s: &str) -> String {
        s.parse::<MethodSpec>().unwrap().to_string()
    }

    #[test]
    fn labels_are_canonical() {
        assert_eq!(label("diffevo"), "diffevo");
        assert_eq!(
            label(" diffevo[ layer=5 , kl-target=0.20 ] "),
            "diffevo[kl=0.2,layer=5]"
        );
        assert_eq!(
            label("diffevo[kl=0.2,layer=5,basis=pca,inject=all,population=8]"),
            "diffevo[kl=0.2,layer=5,basis=pca,inject=all,population=8]"
        );
        assert_eq!(label("best-of-n[temperature=0.30]"), "best-of-n[t=0.3]");
        assert_eq!(label("random[t=0.5,kl=0.1]"), "random[kl=0.1,t=0.5]");
        assert_eq!(
            label("cmaes[reward=\"novelty + keywords(a, b)\"]"),
            "cmaes[reward='novelty + keywords(a, b)']"
        );
        // A label parses back to itself.
        for l in [
            "diffevo[kl=0.05,m=8,fitness-temperature=0.5,kernel-dim=4,mmr=0.7]",
            "cmaes[reward='novelty + keywords(a, b)']",
            "sample[t=0.7,top-p=0.9]",
        ] {
            assert_eq!(label(l), l);
        }
    }

    #[test]
    fn bad_specs_name_the_method_and_key() {
        let cases = [
            ("nope", "unknown method `nope`"),
            ("diffevo[colour=red]", "unknown key `colour`"),
            ("diffevo[kl=abc]", "`kl`: `abc` is not a number"),
            ("diffevo[kl=-0.1]", "`kl`: must be a finite number > 0"),
            ("diffevo[kl=0.1,kl=0.2]", "`kl` is given twice"),
            ("diffevo[kl=0.1,scale=0.2]", "exclude each other"),
            ("diffevo[basis=sideways]", "sideways"),
            ("diffevo[population=1]", "`population`: must be at least 2"),
            ("best-of-n[kl=0.1]", "`kl` does not apply to best-of-n"),
            ("sample[population=4]", "`population` does not apply to sample"),
            ("random[kernel-dim=2]", "only diffevo"),
            ("diffevo[kl=0.1", "expected `]`"),
            ("diffevo[kl]", "not KEY=VALUE"),
            ("diffevo[reward='nonsense']", "`reward`: does not parse"),
            ("best-of-n[top-p=1.5]", "`top-p`: must be in (0, 1]"),
        ];
        for (spec, needle) in cases {
            let e = spec.parse::<MethodSpec>().unwrap_err().to_string();
            assert!(e.contains(needle), "{spec}: {e}");
            assert!(e.starts_with("--methods: "), "{spec}: {e}");
        }
    }

    #[test]
    fn lists_split_outside_brackets() {
        let m = parse_methods("diffevo[kl=0.2,layer=5],best-of-n[t=0.3], sample").unwrap();
        let labels: Vec<String> = m.iter().map(|m| m.to_string()).collect();
        assert_eq!(labels, ["diffevo[kl=0.2,layer=5]", "best-of-n[t=0.3]", "sample"]);
        assert!(parse_methods(" , ").is_err());
    }

    #[test]
    fn budget_gives_rounds_and_is_checked() {
        let mut base = SearchConfig::for_layers(30);
        base.population = 16;
        base.ideas = 6;
        let d: MethodSpec = "diffevo[kl=0.05]".parse().unwrap();
        let c = d.config(&base, 32).unwrap();
        assert_eq!(
            (c.population, c.rounds, c.strategy),
            (16, 2, StrategyKind::DiffEvo)
        );
        assert_eq!(c.scale, Scale::KlTarget(0.05));
        assert_eq!(c.temperature, None);
        let e = d.config(&base, 30).unwrap_err().to_string();
        assert!(
            e.starts_with("--budget: 30 is not a multiple of the population 16"),
            "{e}"
        );
        assert!(d.config(&base, 8).is_err(), "a budget below the population");
        assert!(d.config(&base, 1).unwrap_err().to_string().contains("at least 2"));
        let b: MethodSpec = "best-of-n[t=0.3,population=8]".parse().unwrap();
        let c = b.config(&base, 32).unwrap();
        assert_eq!(
            (c.population, c.rounds, c.scale, c.temperature),
            (8, 4, Scale::None, Some(0.3))
        );
        let s: MethodSpec = "sample".parse().unwrap();
        let c = s.config(&base, 30).unwrap();
        assert_eq!((c.population, c.rounds, c.temperature), (6, 1, Some(1.0)));
        let r: MethodSpec = "random[kl=0.1,t=0.5]".parse().unwrap();
        let c = r.config(&base, 32).unwrap();
        assert_eq!((c.strategy, c.temperature), (StrategyKind::Random, Some(0.5)));
    }
}
