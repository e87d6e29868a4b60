//! Scoring a batch of candidates with a [`RewardSpec`].
//!
//! ```
//! use latentevo_reward::{score_batch, Candidate, Context, RewardSpec};
//! let spec: RewardSpec = "keywords(brick) + 0.5*fluency - 0.1*length(4)".parse()?;
//! let ctx = Context { prompt: "Uses for a brick?", ..Context::default() };
//! let cands = [
//!     Candidate { text: "A brick makes a doorstop.", fluency: -1.0, ..Candidate::default() },
//!     Candidate { text: "", fluency: -0.5, ..Candidate::default() },
//! ];
//! let s = score_batch(&spec, &ctx, &cands)?;
//! // 1 + 0.5 * (-1) - 0.1 * (-|5 - 4| / 4)
//! assert!((s.scores[0].total - 0.525).abs() < 1e-12);
//! assert_eq!(s.scores[0].terms[0], ("keywords(brick)".to_string(), 1.0));
//! assert!(s.scores[1].total.is_nan()); // empty: masked as degenerate
//! assert!(s.scores[1].masked.is_some());
//! # Ok::<(), latentevo_reward::RewardError>(())
//! ```

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::command::{run_scorer, ScorerInput};
use crate::embed::Embedder;
use crate::error::{Result, RewardError};
use crate::metrics::{cosine, degeneracy, Degenerate};
use crate::spec::{NoveltyFrom, RewardSpec, Term};

/// What the batch shares.
#[derive(Debug, Clone, Copy, Default)]
pub struct Context<'a> {
    /// The prompt (passed to external scorers).
    pub prompt: &'a str,
    /// The reference (unperturbed) answer; empty when there is none.
    pub reference_text: &'a str,
    /// The reference answer's embedding; when absent and `novelty:reference` needs it,
    /// it is computed from `reference_text` with `embedder`.
    pub reference_embedding: Option<&'a [f32]>,
    /// The sentence embedder, for missing embeddings and for `dat`.
    pub embedder: Option<&'a Embedder>,
}

/// One candidate and the model-based quantities the engine computed for it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Candidate<'a> {
    /// The continuation.
    pub text: &'a str,
    /// Mean log-prob of the text under the unperturbed model.
    pub fluency: f64,
    /// PMI relevance (needed by `relevance`).
    pub relevance: Option<f64>,
    /// The judge's expected rating in [0, 1] (needed by `judge`).
    pub judge: Option<f64>,
    /// The text's embedding; computed with the context's embedder when absent and
    /// needed.
    pub embedding: Option<&'a [f32]>,
}

/// Why a candidate gets no reward.
#[derive(Debug, Clone, PartialEq)]
pub enum MaskReason {
    /// The text is degenerate.
    Degenerate(Degenerate),
    /// A term's value is NaN or infinite.
    NotFinite {
        /// The term, as written in specs.
        term: String,
    },
    /// An external scorer gave no score for it.
    Command(String),
}

impl std::fmt::Display for MaskReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MaskReason::Degenerate(d) => write!(f, "degenerate: {d}"),
            MaskReason::NotFinite { term } => write!(f, "term `{term}` is not finite"),
            MaskReason::Command(why) => write!(f, "{why}"),
        }
    }
}

/// One candidate's reward.
#[derive(Debug, Clone, PartialEq)]
pub struct CandidateScore {
    /// The weighted sum of the terms; NaN when masked.
    pub total: f64,
    /// Each term's (unweighted) value, named as in the spec's canonical string, in the
    /// spec's order.
    pub terms: Vec<(String, f64)>,
    /// Why the candidate is masked, if it is.
    pub masked: Option<MaskReason>,
}

/// The rewards of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchScores {
    /// One per candidate, in order.
    pub scores: Vec<CandidateScore>,
    /// Batch-level notes: how many candidates were degenerate, what went wrong with an
    /// external scorer.
    pub reports: Vec<String>,
}

impl BatchScores {
    /// The totals, in order (NaN for masked candidates).
    pub fn totals(&self) -> Vec<f64> {
        self.scores.iter().map(|s| s.total).collect()
    }

    /// How many candidates are masked.
    pub fn masked_count(&self) -> usize {
        self.scores.iter().filter(|s| s.masked.is_some()).count()
    }
}

fn missing(term: &Term, what: impl Into<String>) -> RewardError {
    RewardError::MissingInput {
        term: term.to_string(),
        what: what.into(),
    }
}

/// Scores every candidate with `spec`: each term's value, the weighted total, and a mask
/// for degenerate texts, non-finite terms and candidates an external scorer gave no
/// score (masked candidates get a NaN total). An input a term needs and that is absent
/// (a candidate's relevance or judge rating; embeddings with no embedder to compute them)
/// is an error naming the term; embeddings of different dimensions are an error too.
pub fn score_batch(
    spec: &RewardSpec,
    ctx: &Context<'_>,
    candidates: &[Candidate<'_>],
) -> Result<BatchScores> {
    let n = candidates.len();
    // Inputs first, so that a missing one fails before any work.
    for wt in &spec.terms {
        let absent =
            |get: fn(&Candidate<'_>) -> Option<f64>| candidates.iter().position(|c| get(c).is_none());
        match &wt.term {
            Term::Relevance => {
                if let Some(i) = absent(|c| c.relevance) {
                    return Err(missing(
                        &wt.term,
                        format!("each candidate's relevance (candidate {i} has none)"),
                    ));
                }
            }
            Term::Judge => {
                if let Some(i) = absent(|c| c.judge) {
                    return Err(missing(
                        &wt.term,
                        format!("each candidate's judge rating (candidate {i} has none)"),
                    ));
                }
            }
            Term::Dat if ctx.embedder.is_none() => {
                return Err(missing(&wt.term, "an embedder (to embed single words)"))
            }
            _ => {}
        }
    }
    let degenerate: Vec<Option<Degenerate>> = candidates.iter().map(|c| degeneracy(c.text)).collect();
    let needs = spec.needs();
    let embeddings = if needs.embeddings {
        let term = spec
            .terms
            .iter()
            .find(|t| matches!(t.term, Term::Novelty { .. }))
            .map(|t| &t.term)
            .unwrap_or(&Term::Novelty {
                from: NoveltyFrom::Reference,
            });
        Some(candidate_embeddings(term, ctx, candidates)?)
    } else {
        None
    };
    let reference = if needs.reference_embedding {
        let term = Term::Novelty {
            from: NoveltyFrom::Reference,
        };
        let r = match (ctx.reference_embedding, ctx.embedder) {
            (Some(r), _) => r.to_vec(),
            (None, Some(e)) if !ctx.reference_text.is_empty() => {
                e.embed(&[ctx.reference_text])?.pop().unwrap_or_default()
            }
            _ => {
                return Err(missing(
                    &term,
                    "the reference answer's embedding (or its text and an embedder)",
                ))
            }
        };
        if let Some(first) = embeddings.as_ref().and_then(|e| e.first()) {
            if first.len() != r.len() {
                return Err(RewardError::BadInput(format!(
                    "the reference embedding has {} dimensions, the candidates' have {}",
                    r.len(),
                    first.len()
                )));
            }
        }
        Some(r)
    } else {
        None
    };

    let mut values: Vec<Vec<f64>> = Vec::with_capacity(spec.terms.len());
    let mut command_masks: Vec<Option<String>> = vec![None; n];
    let mut reports = Vec::new();
    for wt in &spec.terms {
        let v: Vec<f64> = match &wt.term {
            Term::Fluency => candidates.iter().map(|c| c.fluency).collect(),
            Term::Relevance => candidates
                .iter()
                .map(|c| c.relevance.unwrap_or(f64::NAN))
                .collect(),
            Term::Judge => candidates.iter().map(|c| c.judge.unwrap_or(f64::NAN)).collect(),
            Term::Novelty { from } => {
                let e = embeddings.as_deref().unwrap_or_default();
                match (from, &reference) {
                    (NoveltyFrom::Reference, Some(r)) => e.iter().map(|x| 1.0 - cosine(x, r)).collect(),
                    _ => population_novelty(e, &degenerate),
                }
            }
            Term::Dat => match ctx.embedder {
                Some(embedder) => dat_scores(embedder, candidates)?,
                None => return Err(missing(&wt.term, "an embedder (to embed single words)")),
            },
            Term::Regex { pattern } => {
                let re = regex::Regex::new(pattern).map_err(|e| {
                    RewardError::BadInput(format!("reward term `{}`: bad regex: {e}", wt.term))
                })?;
                candidates
                    .iter()
                    .map(|c| f64::from(u8::from(re.is_match(c.text))))
                    .collect()
            }
            Term::Keywords { words } => candidates.iter().map(|c| keyword_share(c.text, words)).collect(),
            Term::Length { target } => candidates
                .iter()
                .map(|c| {
                    let w = c.text.split_whitespace().count() as f64;
                    let t = (*target).max(1) as f64;
                    -(w - t).abs() / t
                })
                .collect(),
            Term::Command { .. } if n == 0 => Vec::new(),
            Term::Command {
                program,
                timeout_secs,
            } => {
                let inputs: Vec<ScorerInput<'_>> = candidates
                    .iter()
                    .enumerate()
                    .map(|(index, c)| ScorerInput {
                        index,
                        prompt: ctx.prompt,
                        text: c.text,
                        reference: ctx.reference_text,
                    })
                    .collect();
                let out = run_scorer(program, &inputs, Duration::from_secs_f64(*timeout_secs));
                reports.extend(out.report);
                out.scores
                    .into_iter()
                    .zip(command_masks.iter_mut())
                    .map(|(s, mask)| match s {
                        Ok(x) => x,
                        Err(why) => {
                            mask.get_or_insert(why);
                            f64::NAN
                        }
                    })
                    .collect()
            }
        };
        values.push(v);
    }

    let names: Vec<String> = spec.terms.iter().map(|t| t.term.to_string()).collect();
    let mut scores = Vec::with_capacity(n);
    for i in 0..n {
        let terms: Vec<(String, f64)> = names
            .iter()
            .zip(&values)
            .map(|(name, v)| (name.clone(), v[i]))
            .collect();
        let masked = if let Some(d) = &degenerate[i] {
            Some(MaskReason::Degenerate(d.clone()))
        } else if let Some(why) = &command_masks[i] {
            Some(MaskReason::Command(why.clone()))
        } else {
            terms
                .iter()
                .find(|(_, v)| !v.is_finite())
                .map(|(name, _)| MaskReason::NotFinite { term: name.clone() })
        };
        let total = if masked.is_some() {
            f64::NAN
        } else {
            spec.terms
                .iter()
                .zip(&terms)
                .map(|(wt, (_, v))| wt.weight * v)
                .sum()
        };
        scores.push(CandidateScore { total, terms, masked });
    }
    let degenerate_count = degenerate.iter().filter(|d| d.is_some()).count();
    if degenerate_count > 0 {
        reports.insert(
            0,
            format!("{degenerate_count} of {n} candidates degenerate (masked)"),
        );
    }
    Ok(BatchScores { scores, reports })
}

fn candidate_embeddings(
    term: &Term,
    ctx: &Context<'_>,
    candidates: &[Candidate<'_>],
) -> Result<Vec<Vec<f32>>> {
    let todo: Vec<usize> = (0..candidates.len())
        .filter(|&i| candidates[i].embedding.is_none())
        .collect();
    let mut computed: HashMap<usize, Vec<f32>> = HashMap::new();
    if !todo.is_empty() {
        let Some(e) = ctx.embedder else {
            return Err(missing(
                term,
                format!(
                    "candidate embeddings or an embedder (candidate {} has no embedding)",
                    todo[0]
                ),
            ));
        };
        let texts: Vec<&str> = todo.iter().map(|&i| candidates[i].text).collect();
        computed = todo.into_iter().zip(e.embed(&texts)?).collect();
    }
    let out: Vec<Vec<f32>> = candidates
        .iter()
        .enumerate()
        .map(|(i, c)| match c.embedding {
            Some(e) => e.to_vec(),
            None => computed.remove(&i).unwrap_or_default(),
        })
        .collect();
    if let Some(first) = out.first() {
        if let Some(i) = out.iter().position(|e| e.len() != first.len()) {
            return Err(RewardError::BadInput(format!(
                "candidate {i}'s embedding has {} dimensions, candidate 0's has {}",
                out[i].len(),
                first.len()
            )));
        }
    }
    Ok(out)
}

/// `1 - max cosine` to the other non-degenerate candidates; 0 when there is none.
fn population_novelty(emb: &[Vec<f32>], degenerate: &[Option<Degenerate>]) -> Vec<f64> {
    (0..emb.len())
        .map(|i| {
            let nearest = (0..emb.len())
                .filter(|&j| j != i && degenerate.get(j).is_none_or(|d| d.is_none()))
                .map(|j| cosine(&emb[i], &emb[j]))
                .fold(f64::NEG_INFINITY, f64::max);
            if nearest.is_finite() {
                1.0 - nearest
            } else {
                0.0
            }
        })
        .collect()
}

fn tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// The share of `words` (each one or more words) occurring in `text` as a contiguous run
/// of whole words, ignoring case.
fn keyword_share(text: &str, words: &[String]) -> f64 {
    if words.is_empty() {
        return 0.0;
    }
    let t = tokens(text);
    let present = words
        .iter()
        .filter(|w| {
            let k = tokens(w);
            !k.is_empty() && t.windows(k.len()).any(|win| win == k.as_slice())
        })
        .count();
    present as f64 / words.len() as f64
}

/// The most words the DAT uses per answer.
pub const DAT_WORDS: usize = 10;

/// A built-in English stop-word list (function words, pronouns, auxiliaries, common
/// adverbs), excluded from the DAT's words.
pub const STOP_WORDS: &[&str] = &[
    "about",
    "above",
    "after",
    "again",
    "against",
    "all",
    "also",
    "although",
    "always",
    "among",
    "and",
    "another",
    "any",
    "anyone",
    "anything",
    "are",
    "around",
    "because",
    "been",
    "before",
    "being",
    "below",
    "between",
    "both",
    "but",
    "can",
    "cannot",
    "could",
    "did",
    "does",
    "doing",
    "done",
    "down",
    "during",
    "each",
    "either",
    "else",
    "enough",
    "even",
    "ever",
    "every",
    "few",
    "for",
    "from",
    "further",
    "get",
    "gets",
    "got",
    "had",
    "has",
    "have",
    "having",
    "her",
    "here",
    "hers",
    "herself",
    "him",
    "himself",
    "his",
    "how",
    "however",
    "into",
    "its",
    "itself",
    "just",
    "least",
    "less",
    "let",
    "like",
    "made",
    "make",
    "makes",
    "many",
    "may",
    "might",
    "mine",
    "more",
    "most",
    "much",
    "must",
    "myself",
    "neither",
    "never",
    "nor",
    "not",
    "nothing",
    "now",
    "off",
    "often",
    "once",
    "one",
    "only",
    "onto",
    "other",
    "others",
    "our",
    "ours",
    "ourselves",
    "out",
    "over",
    "own",
    "per",
    "perhaps",
    "quite",
    "rather",
    "really",
    "same",
    "see",
    "seem",
    "seems",
    "several",
    "shall",
    "she",
    "should",
    "since",
    "some",
    "something",
    "still",
    "such",
    "than",
    "that",
    "the",
    "their",
    "theirs",
    "them",
    "themselves",
    "then",
    "there",
    "these",
    "they",
    "thing",
    "things",
    "this",
    "those",
    "though",
    "three",
    "through",
    "thus",
    "too",
    "two",
    "under",
    "until",
    "upon",
    "use",
    "used",
    "uses",
    "using",
    "very",
    "was",
    "way",
    "well",
    "were",
    "what",
    "whatever",
    "when",
    "where",
    "whether",
    "which",
    "while",
    "who",
    "whom",
    "whose",
    "why",
    "will",
    "with",
    "within",
    "without",
    "would",
    "yet",
    "you",
    "your",
    "yours",
    "yourself",
    "yourselves",
];

/// The DAT's words of a text: distinct alphabetic words, lower-cased, at least 3 letters,
/// not stop words, the first [`DAT_WORDS`] in order.
pub fn dat_words(text: &str) -> Vec<String> {
    let stop: HashSet<&str> = STOP_WORDS.iter().copied().collect();
    let mut out: Vec<String> = Vec::new();
    for w in text.split(|c: char| !c.is_alphabetic()) {
        let w = w.to_lowercase();
        if w.chars().count() >= 3 && !stop.contains(w.as_str()) && !out.contains(&w) {
            out.push(w);
            if out.len() == DAT_WORDS {
                break;
            }
        }
    }
    out
}

fn dat_scores(embedder: &Embedder, candidates: &[Candidate<'_>]) -> Result<Vec<f64>> {
    let per: Vec<Vec<String>> = candidates.iter().map(|c| dat_words(c.text)).collect();
    let mut unique: Vec<&str> = Vec::new();
    let mut seen = HashSet::new();
    for w in per.iter().flatten() {
        if seen.insert(w.as_str()) {
            unique.push(w);
        }
    }
    let vectors: HashMap<&str, Vec<f32>> = unique.iter().copied().zip(embedder.embed(&unique)?).collect();
    Ok(per
        .iter()
        .map(|words| {
            let e: Vec<&[f32]> = words
                .iter()
                .filter_map(|w| vectors.get(w.as_str()).map(|v| v.as_slice()))
                .collect();
            if e.len() < 2 {
                return 0.0;
            }
            let mut sum = 0.0;
            let mut pairs = 0usize;
            for i in 0..e.len() {
                for j in i + 1..e.len() {
                    sum += 1.0 - cosine(e[i], e[j]);
                    pairs += 1;
                }
            }
            100.0 * sum / pairs as f64
        })
        .collect())
}
