//! Diversity metrics on embeddings and texts, and the degeneracy test.
//!
//! All functions are pure and total: empty inputs give a documented value, never a
//! panic.
//!
//! ```
//! use latentevo_reward::metrics::{distinct_ideas, vendi_score};
//! let e = vec![vec![1.0, 0.0], vec![1.0, 0.0], vec![0.0, 1.0]];
//! assert_eq!(distinct_ideas(&e, 0.85), 2);
//! let v = vendi_score(&e);
//! assert!(v > 1.0 && v < 3.0);
//! ```

use std::collections::HashSet;

/// The default cosine threshold of [`distinct_ideas`]: two texts whose embeddings have
/// cosine >= 0.85 are the same idea (the threshold the design notes' measurements used).
pub const DEFAULT_DISTINCT_THRESHOLD: f64 = 0.85;

/// Cosine similarity of two vectors, computed in f64: `a.b / (|a| |b|)`. A zero vector
/// gives 0; vectors of different lengths give NaN.
///
/// ```
/// let c = latentevo_reward::cosine(&[1.0, 0.0], &[1.0, 1.0]);
/// assert!((c - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-12);
/// ```
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() {
        return f64::NAN;
    }
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x as f64, y as f64);
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    dot / (na.sqrt() * nb.sqrt())
}

/// Mean of `1 - cosine` over all unordered pairs; 0 for fewer than two embeddings.
pub fn mean_pairwise_distance(embeddings: &[Vec<f32>]) -> f64 {
    let n = embeddings.len();
    if n < 2 {
        return 0.0;
    }
    let mut sum = 0.0;
    for i in 0..n {
        for j in i + 1..n {
            sum += 1.0 - cosine(&embeddings[i], &embeddings[j]);
        }
    }
    sum / (n * (n - 1) / 2) as f64
}

/// The Vendi score (Friedman and Dieng 2023): `exp(-sum_i l_i ln l_i)` over the
/// eigenvalues `l_i` of `K / n`, with `K` the cosine-similarity kernel of the
/// embeddings. The effective number of distinct items: 1 for identical embeddings, `n`
/// for orthogonal ones. Tiny negative eigenvalues (rounding) are clamped to 0 and the
/// eigenvalues renormalised to sum 1. 0 for no embeddings, 1 for one.
pub fn vendi_score(embeddings: &[Vec<f32>]) -> f64 {
    let n = embeddings.len();
    match n {
        0 => return 0.0,
        1 => return 1.0,
        _ => {}
    }
    let k = nalgebra::DMatrix::from_fn(n, n, |i, j| {
        let similarity = if i == j {
            1.0
        } else {
            cosine(&embeddings[i], &embeddings[j])
        };
        similarity / n as f64
    });
    let eig = nalgebra::SymmetricEigen::new(k).eigenvalues;
    let clamped: Vec<f64> = eig
        .iter()
        .map(|&l| if l.is_finite() { l.max(0.0) } else { 0.0 })
        .collect();
    let total: f64 = clamped.iter().sum();
    if total <= 0.0 {
        return 1.0;
    }
    let entropy: f64 = clamped
        .iter()
        .map(|&l| l / total)
        .filter(|&p| p > 0.0)
        .map(|p| -p * p.ln())
        .sum();
    entropy.exp()
}

fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(|w| w.to_lowercase()).collect()
}

/// Distinct-n over a set of texts: the number of unique n-grams divided by the number of
/// n-grams, over all texts together (tokens: whitespace-separated, lower-cased). 0 when
/// there are no n-grams (or `n` is 0).
///
/// ```
/// let d = latentevo_reward::distinct_n(&["a b a b", "A B"], 2);
/// assert!((d - 2.0 / 4.0).abs() < 1e-12); // {a b, b a} of [a b, b a, a b, a b]
/// ```
pub fn distinct_n(texts: &[&str], n: usize) -> f64 {
    if n == 0 {
        return 0.0;
    }
    let mut seen = HashSet::new();
    let mut total = 0usize;
    for t in texts {
        let w = words(t);
        for g in w.windows(n) {
            total += 1;
            seen.insert(g.to_vec());
        }
    }
    if total == 0 {
        0.0
    } else {
        seen.len() as f64 / total as f64
    }
}

/// The number of distinct ideas (as NoveltyBench counts distinct generations): walk the
/// embeddings in order; one joins the first group whose first member it has cosine >=
/// `threshold` with, else it opens a new group. Returns the number of groups (0 for no
/// embeddings). [`DEFAULT_DISTINCT_THRESHOLD`] is 0.85.
pub fn distinct_ideas(embeddings: &[Vec<f32>], threshold: f64) -> usize {
    let mut heads: Vec<&[f32]> = Vec::new();
    for e in embeddings {
        if !heads.iter().any(|h| cosine(h, e) >= threshold) {
            heads.push(e);
        }
    }
    heads.len()
}

/// Why a text is degenerate (see [`degeneracy`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Degenerate {
    /// Empty or only whitespace.
    Empty,
    /// Mostly control characters or replacement characters, or no letter or digit at
    /// all.
    Garbage,
    /// A short unit repeated at least four times in a row: a word n-gram (n = 1..4) or,
    /// inside one word, a run of 1..4 letters (`ogogogog`).
    Loop {
        /// The repeated unit.
        unit: String,
        /// How many times in a row.
        times: usize,
    },
    /// At least 8 words of which fewer than half are distinct.
    Repetitive {
        /// Distinct words / words.
        unique_ratio: f64,
    },
}

impl std::fmt::Display for Degenerate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Degenerate::Empty => write!(f, "empty"),
            Degenerate::Garbage => write!(f, "garbage (non-printable or no letters)"),
            Degenerate::Loop { unit, times } => write!(f, "loop (`{unit}` x{times})"),
            Degenerate::Repetitive { unique_ratio } => {
                write!(f, "repetitive (unique-word ratio {unique_ratio:.2})")
            }
        }
    }
}

/// Repetitions in a row needed for a [`Degenerate::Loop`].
const LOOP_TIMES: usize = 4;

/// Whether a text is degenerate, and why; checked in this order:
/// - [`Degenerate::Empty`]: empty or whitespace only;
/// - [`Degenerate::Garbage`]: more than 10% of the characters are control characters
///   (other than whitespace) or U+FFFD, or no character is a letter or digit;
/// - [`Degenerate::Loop`]: some word n-gram (n = 1..4, lower-cased, punctuation
///   trimmed) repeated at least 4 times in a row, or inside one word a unit of 1..4
///   letters repeated at least 4 times in a row over at least 8 characters;
/// - [`Degenerate::Repetitive`]: at least 8 words and a distinct-word ratio below 0.5.
///
/// ```
/// use latentevo_reward::{degeneracy, Degenerate};
/// assert_eq!(degeneracy("  "), Some(Degenerate::Empty));
/// assert!(matches!(degeneracy("or or or or or"), Some(Degenerate::Loop { .. })));
/// assert_eq!(degeneracy("Use the brick as a doorstop."), None);
/// ```
pub fn degeneracy(text: &str) -> Option<Degenerate> {
    if text.trim().is_empty() {
        return Some(Degenerate::Empty);
    }
    let chars = text.chars().count();
    let bad = text
        .chars()
        .filter(|&c| (c.is_control() && !c.is_whitespace()) || c == '\u{FFFD}')
        .count();
    if bad * 10 > chars || !text.chars().any(|c| c.is_alphanumeric()) {
        return Some(Degenerate::Garbage);
    }
    let w: Vec<String> = text
        .split_whitespace()
        .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase())
        .filter(|w| !w.is_empty())
        .collect();
    if let Some(d) = word_loop(&w) {
        return Some(d);
    }
    for word in &w {
        if let Some(d) = char_loop(word) {
            return Some(d);
        }
    }
    if w.len() >= 8 {
        let unique = w.iter().collect::<HashSet<_>>().len();
        let ratio = unique as f64 / w.len() as f64;
        if ratio < 0.5 {
            return Some(Degenerate::Repetitive { unique_ratio: ratio });
        }
    }
    None
}

/// The run with the most repetitions of a unit of `n` items in a row (n = 1..=4, at
/// least [`LOOP_TIMES`] times) that `accept(unit, times)` accepts, as (start, n, times).
fn longest_run<T: PartialEq>(
    items: &[T],
    accept: impl Fn(&[T], usize) -> bool,
) -> Option<(usize, usize, usize)> {
    let mut best: Option<(usize, usize, usize)> = None; // (start, n, times)
    for n in 1..=4 {
        if items.len() < n * LOOP_TIMES {
            break;
        }
        let mut start = 0;
        while start + n <= items.len() {
            let mut times = 1;
            while start + (times + 1) * n <= items.len()
                && items[start + times * n..start + (times + 1) * n] == items[start..start + n]
            {
                times += 1;
            }
            if times >= LOOP_TIMES
                && best.is_none_or(|(_, _, t)| times > t)
                && accept(&items[start..start + n], times)
            {
                best = Some((start, n, times));
            }
            start += 1;
        }
    }
    best
}

fn word_loop(words: &[String]) -> Option<Degenerate> {
    let (start, n, times) = longest_run(words, |_, _| true)?;
    Some(Degenerate::Loop {
        unit: words[start..start + n].join(" "),
        times,
    })
}

fn char_loop(word: &str) -> Option<Degenerate> {
    let c: Vec<char> = word.chars().collect();
    if c.len() < 8 {
        return None;
    }
    let (start, n, times) = longest_run(&c, |unit, times| {
        unit.len() * times >= 8 && unit.iter().any(|ch| ch.is_alphabetic())
    })?;
    Some(Degenerate::Loop {
        unit: c[start..start + n].iter().collect(),
        times,
    })
}
