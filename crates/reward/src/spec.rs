//! Reward specs: a weighted sum of terms, written on the command line or in a TOML file.
//!
//! # The string form
//!
//! ```text
//! novelty + 0.5*fluency
//! relevance + 0.3*novelty:population - 0.1*length(40)
//! regex('^1\.') + keywords(brick, wall) + command('python3 score.py', 10) + judge + dat
//! ```
//!
//! A spec is terms joined by `+` or `-`, each optionally preceded by `WEIGHT*` (a
//! number; the weight is 1 without it, and `-` negates it). The terms ([`Term`]):
//!
//! | term | value |
//! |---|---|
//! | `fluency` | mean log-prob of the answer under the unperturbed model (an input) |
//! | `novelty` or `novelty:reference` | 1 - cosine to the reference answer's embedding |
//! | `novelty:population` | 1 - cosine to the nearest other candidate of the batch |
//! | `relevance` | mean log p(answer given prompt) - mean log p(answer alone) (an input) |
//! | `dat` | Divergent Association Task score of the answer's words (see [`Term::Dat`]) |
//! | `regex(PATTERN)` | 1 if the answer matches, else 0 |
//! | `keywords(W1, W2, ...)` | the share of the words present (whole words, any case) |
//! | `length(N)` | `-abs(words - N) / N` |
//! | `command(PROGRAM)` or `command(PROGRAM, SECONDS)` | an external scorer (see [`crate::command`]); timeout 30 s by default |
//! | `judge` | the model's expected rating of the answer in [0, 1] (an input) |
//!
//! Arguments are quoted with `'` or `"` (a backslash escapes the quote character or a
//! backslash; any other backslash stays, so `'^1\.'` is the regex `^1\.`) or, for
//! words and numbers, written bare. Errors name the column.
//!
//! # The TOML form
//!
//! ```toml
//! [[term]]
//! name = "relevance"          # required
//!
//! [[term]]
//! name = "novelty"
//! weight = 0.3                # optional, default 1
//! from = "population"         # novelty only: "reference" (default) or "population"
//!
//! [[term]]
//! name = "length"
//! weight = -0.1
//! target = 40                 # length: a positive integer
//!
//! [[term]]
//! name = "command"
//! program = "python3 score.py"
//! timeout = 10                # seconds, optional (default 30)
//! ```
//!
//! and `pattern = '^1\.'` for `regex`, `words = ["brick", "wall"]` for `keywords`. Unknown
//! tables or fields are errors naming the term and field. [`RewardSpec::from_arg`] reads
//! a path ending in `.toml` as such a file and parses anything else as a string.
//!
//! [`RewardSpec`]'s `Display` writes the canonical string, which parses back to the same
//! spec.
//!
//! ```
//! use latentevo_reward::{RewardSpec, Term};
//! let spec: RewardSpec = "relevance + 0.3*novelty:population - 0.1*length(40)".parse()?;
//! assert_eq!(spec.terms.len(), 3);
//! assert_eq!(spec.terms[2].weight, -0.1);
//! assert_eq!(spec.terms[2].term, Term::Length { target: 40 });
//! assert_eq!(spec.to_string().parse::<RewardSpec>()?, spec);
//! assert!(spec.needs().embeddings && spec.needs().relevance && !spec.needs().judge);
//! # Ok::<(), latentevo_reward::RewardError>(())
//! ```

use std::path::Path;
use std::str::FromStr;

use crate::error::{Result, RewardError};

/// The default timeout of a `command` term, in seconds.
pub const DEFAULT_COMMAND_TIMEOUT_SECS: f64 = 30.0;

/// What `novelty` is measured against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoveltyFrom {
    /// The reference (unperturbed) answer.
    Reference,
    /// The nearest other (non-degenerate) candidate of the same batch.
    Population,
}

/// One reward term (see the module docs for the syntax).
#[derive(Debug, Clone, PartialEq)]
pub enum Term {
    /// Mean log-prob of the answer under the unperturbed model ([`crate::Candidate::fluency`]).
    Fluency,
    /// `1 - cosine` of the answer's embedding to the reference answer's, or to the
    /// nearest other non-degenerate candidate of the batch (0 when there is none).
    Novelty {
        /// What novelty is measured against.
        from: NoveltyFrom,
    },
    /// Pointwise mutual information of answer and prompt under the base model
    /// ([`crate::Candidate::relevance`], computed by the engine).
    Relevance,
    /// The Divergent Association Task (Olson et al. 2021) on the answer: its distinct
    /// content words (alphabetic, lower-cased, at least 3 letters, not in a built-in
    /// English stop-word list), the first 10 in order, each embedded alone; the mean
    /// pairwise `1 - cosine` times 100. Fewer than two such words give 0 (not a mask:
    /// a short answer is not broken, only not divergent).
    Dat,
    /// 1 if the regular expression (Rust `regex` syntax) matches the answer, else 0.
    Regex {
        /// The pattern.
        pattern: String,
    },
    /// The share of the words (or phrases) that occur in the answer as whole words,
    /// ignoring case.
    Keywords {
        /// The words.
        words: Vec<String>,
    },
    /// `-abs(words - target) / target`, words counted by whitespace.
    Length {
        /// The target number of words (> 0).
        target: usize,
    },
    /// An external scorer run with `sh -c PROGRAM` (see [`crate::command`]).
    Command {
        /// The shell command.
        program: String,
        /// Seconds before the program is killed and its candidates masked.
        timeout_secs: f64,
    },
    /// The model's expected rating of the answer in [0, 1] ([`crate::Candidate::judge`]).
    Judge,
}

/// The term names, as written in specs.
pub const TERM_NAMES: [&str; 9] = [
    "fluency",
    "novelty",
    "relevance",
    "dat",
    "regex",
    "keywords",
    "length",
    "command",
    "judge",
];

impl Term {
    /// The term's name (`novelty` for both kinds of novelty).
    pub fn name(&self) -> &'static str {
        match self {
            Term::Fluency => "fluency",
            Term::Novelty { .. } => "novelty",
            Term::Relevance => "relevance",
            Term::Dat => "dat",
            Term::Regex { .. } => "regex",
            Term::Keywords { .. } => "keywords",
            Term::Length { .. } => "length",
            Term::Command { .. } => "command",
            Term::Judge => "judge",
        }
    }
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn is_bare(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-' || c == '.')
        && !s.starts_with('-')
}

impl std::fmt::Display for Term {
    /// The canonical form, e.g. `novelty:population`, `length(40)`, `regex('^1\\.')`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Term::Novelty {
                from: NoveltyFrom::Population,
            } => write!(f, "novelty:population"),
            Term::Regex { pattern } => write!(f, "regex({})", quote(pattern)),
            Term::Keywords { words } => {
                let w: Vec<String> = words
                    .iter()
                    .map(|w| if is_bare(w) { w.clone() } else { quote(w) })
                    .collect();
                write!(f, "keywords({})", w.join(", "))
            }
            Term::Length { target } => write!(f, "length({target})"),
            Term::Command {
                program,
                timeout_secs,
            } => {
                if *timeout_secs == DEFAULT_COMMAND_TIMEOUT_SECS {
                    write!(f, "command({})", quote(program))
                } else {
                    write!(f, "command({}, {timeout_secs})", quote(program))
                }
            }
            other => write!(f, "{}", other.name()),
        }
    }
}

/// A term with its weight.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightedTerm {
    /// The weight (finite; may be negative).
    pub weight: f64,
    /// The term.
    pub term: Term,
}

/// A reward: the weighted sum of its terms.
#[derive(Debug, Clone, PartialEq)]
pub struct RewardSpec {
    /// The terms, in the order written.
    pub terms: Vec<WeightedTerm>,
}

/// What the engine must compute for a spec (see [`RewardSpec::needs`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// The candidates' embeddings (any `novelty`); [`crate::score_batch`] computes missing
    /// ones with the context's embedder.
    pub embeddings: bool,
    /// The reference answer's embedding (`novelty:reference`); computed from the
    /// reference text with the embedder when not given.
    pub reference_embedding: bool,
    /// The embedder itself (`dat` embeds single words).
    pub embedder: bool,
    /// Each candidate's relevance (`relevance`).
    pub relevance: bool,
    /// Each candidate's judge rating (`judge`).
    pub judge: bool,
    /// An external program runs (`command`).
    pub command: bool,
}

impl RewardSpec {
    /// What the engine must compute for this spec.
    pub fn needs(&self) -> Needs {
        let mut n = Needs::default();
        for t in &self.terms {
            match &t.term {
                Term::Novelty { from } => {
                    n.embeddings = true;
                    n.reference_embedding |= *from == NoveltyFrom::Reference;
                }
                Term::Dat => n.embedder = true,
                Term::Relevance => n.relevance = true,
                Term::Judge => n.judge = true,
                Term::Command { .. } => n.command = true,
                _ => {}
            }
        }
        n
    }

    /// A spec from a command-line argument: a path ending in `.toml` is read as a TOML
    /// spec file, anything else is parsed as a spec string.
    pub fn from_arg(arg: &str) -> Result<RewardSpec> {
        if arg.trim_end().ends_with(".toml") {
            RewardSpec::from_toml_file(Path::new(arg.trim()))
        } else {
            arg.parse()
        }
    }

    /// A spec from a TOML file (see the module docs).
    pub fn from_toml_file(path: &Path) -> Result<RewardSpec> {
        let text = std::fs::read_to_string(path).map_err(|source| RewardError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        RewardSpec::from_toml_str(&text, path)
    }

    /// A spec from TOML text; `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<RewardSpec> {
        let err = |message: String| RewardError::SpecFile {
            path: origin.to_path_buf(),
            message,
        };
        let table: toml::Table = toml::from_str(text).map_err(|e| err(format!("not valid TOML: {e}")))?;
        if let Some(k) = table.keys().find(|k| k.as_str() != "term") {
            return Err(err(format!(
                "unknown table or key `{k}` (a spec is a list of [[term]] tables)"
            )));
        }
        let list = match table.get("term") {
            Some(toml::Value::Array(a)) if !a.is_empty() => a,
            _ => return Err(err("no [[term]] tables".into())),
        };
        let mut terms = Vec::with_capacity(list.len());
        for (i, v) in list.iter().enumerate() {
            let t = v
                .as_table()
                .ok_or_else(|| err(format!("term {}: not a table", i + 1)))?;
            terms.push(toml_term(t).map_err(|m| err(format!("term {}: {m}", i + 1)))?);
        }
        Ok(RewardSpec { terms })
    }
}

fn toml_term(t: &toml::Table) -> std::result::Result<WeightedTerm, String> {
    let name = match t.get("name") {
        Some(toml::Value::String(s)) => s.as_str(),
        Some(other) => return Err(format!("field `name` is {other}, not a string")),
        None => return Err("field `name` is missing".into()),
    };
    let ctx = |m: String| format!("(`{name}`) {m}");
    let number = |key: &str| -> std::result::Result<Option<f64>, String> {
        match t.get(key) {
            None => Ok(None),
            Some(toml::Value::Integer(i)) => Ok(Some(*i as f64)),
            Some(toml::Value::Float(x)) if x.is_finite() => Ok(Some(*x)),
            Some(other) => Err(ctx(format!("field `{key}` is {other}, not a finite number"))),
        }
    };
    let string = |key: &str| -> std::result::Result<String, String> {
        match t.get(key) {
            Some(toml::Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(ctx(format!("field `{key}` is {other}, not a string"))),
            None => Err(ctx(format!("field `{key}` is missing"))),
        }
    };
    let weight = number("weight")?.unwrap_or(1.0);
    let (term, fields): (Term, &[&str]) = match name {
        "fluency" => (Term::Fluency, &[]),
        "relevance" => (Term::Relevance, &[]),
        "dat" => (Term::Dat, &[]),
        "judge" => (Term::Judge, &[]),
        "novelty" => {
            let from = match t.get("from") {
                None => NoveltyFrom::Reference,
                Some(toml::Value::String(s)) => novelty_from(s).map_err(ctx)?,
                Some(other) => return Err(ctx(format!("field `from` is {other}, not a string"))),
            };
            (Term::Novelty { from }, &["from"])
        }
        "regex" => {
            let pattern = string("pattern")?;
            regex::Regex::new(&pattern).map_err(|e| ctx(format!("field `pattern`: {e}")))?;
            (Term::Regex { pattern }, &["pattern"])
        }
        "keywords" => {
            let words = match t.get("words") {
                Some(toml::Value::Array(a)) => a
                    .iter()
                    .map(|w| match w {
                        toml::Value::String(s) if !s.trim().is_empty() => Ok(s.clone()),
                        other => Err(ctx(format!("field `words`: {other} is not a non-empty string"))),
                    })
                    .collect::<std::result::Result<Vec<_>, _>>()?,
                Some(other) => return Err(ctx(format!("field `words` is {other}, not a list"))),
                None => return Err(ctx("field `words` is missing".into())),
            };
            if words.is_empty() {
                return Err(ctx("field `words` is empty".into()));
            }
            (Term::Keywords { words }, &["words"])
        }
        "length" => {
            let target = match t.get("target") {
                Some(toml::Value::Integer(i)) if *i > 0 => *i as usize,
                Some(other) => return Err(ctx(format!("field `target` is {other}, not a positive integer"))),
                None => return Err(ctx("field `target` is missing".into())),
            };
            (Term::Length { target }, &["target"])
        }
        "command" => {
            let program = string("program")?;
            let timeout_secs = number("timeout")?.unwrap_or(DEFAULT_COMMAND_TIMEOUT_SECS);
            if timeout_secs <= 0.0 {
                return Err(ctx(format!("field `timeout` is {timeout_secs}, not > 0")));
            }
            (
                Term::Command {
                    program,
                    timeout_secs,
                },
                &["program", "timeout"],
            )
        }
        other => {
            return Err(format!(
                "unknown term `{other}` (known: {})",
                TERM_NAMES.join(", ")
            ))
        }
    };
    if let Some(k) = t
        .keys()
        .find(|k| !["name", "weight"].contains(&k.as_str()) && !fields.contains(&k.as_str()))
    {
        return Err(ctx(format!("unknown field `{k}`")));
    }
    Ok(WeightedTerm { weight, term })
}

fn novelty_from(s: &str) -> std::result::Result<NoveltyFrom, String> {
    match s {
        "reference" => Ok(NoveltyFrom::Reference),
        "population" => Ok(NoveltyFrom::Population),
        other => Err(format!(
            "novelty is measured from `reference` or `population`, not `{other}`"
        )),
    }
}

impl std::fmt::Display for RewardSpec {
    /// The canonical string, e.g. `relevance + 0.3*novelty:population - 0.1*length(40)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, t) in self.terms.iter().enumerate() {
            let (sign, w) = if t.weight < 0.0 || (t.weight == 0.0 && t.weight.is_sign_negative()) {
                ("-", -t.weight)
            } else {
                ("+", t.weight)
            };
            match (i, sign) {
                (0, "+") => {}
                (0, _) => write!(f, "-")?,
                _ => write!(f, " {sign} ")?,
            }
            if w != 1.0 {
                write!(f, "{w}*")?;
            }
            write!(f, "{}", t.term)?;
        }
        Ok(())
    }
}

impl FromStr for RewardSpec {
    type Err = RewardError;

    /// Parses the string form (see the module docs).
    fn from_str(s: &str) -> Result<RewardSpec> {
        Parser {
            src: s,
            chars: s.chars().collect(),
            pos: 0,
        }
        .spec()
    }
}

struct Parser<'a> {
    src: &'a str,
    chars: Vec<char>,
    pos: usize,
}

/// An argument of a term, with its column.
enum Arg {
    Quoted(String, usize),
    Bare(String, usize),
}

impl Arg {
    fn text(&self) -> &str {
        match self {
            Arg::Quoted(s, _) | Arg::Bare(s, _) => s,
        }
    }
    fn at(&self) -> usize {
        match self {
            Arg::Quoted(_, p) | Arg::Bare(_, p) => *p,
        }
    }
}

impl Parser<'_> {
    fn err<T>(&self, at: usize, message: impl Into<String>) -> Result<T> {
        Err(RewardError::Spec {
            spec: self.src.to_string(),
            column: at + 1,
            message: message.into(),
        })
    }

    fn skip_ws(&mut self) {
        while self.chars.get(self.pos).is_some_and(|c| c.is_whitespace()) {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.skip_ws();
        self.chars.get(self.pos).copied()
    }

    fn expect(&mut self, c: char, what: &str) -> Result<()> {
        match self.peek() {
            Some(x) if x == c => {
                self.pos += 1;
                Ok(())
            }
            Some(x) => self.err(self.pos, format!("expected {what}, found `{x}`")),
            None => self.err(self.pos, format!("expected {what}, found the end")),
        }
    }

    fn spec(mut self) -> Result<RewardSpec> {
        let mut terms = Vec::new();
        let mut sign = match self.peek() {
            None => return self.err(0, "empty reward spec (e.g. `novelty + 0.5*fluency`)"),
            Some('-') => {
                self.pos += 1;
                -1.0
            }
            Some('+') => {
                self.pos += 1;
                1.0
            }
            Some(_) => 1.0,
        };
        loop {
            let (weight, term) = self.weighted()?;
            terms.push(WeightedTerm {
                weight: sign * weight,
                term,
            });
            sign = match self.peek() {
                None => break,
                Some('+') => 1.0,
                Some('-') => -1.0,
                Some(c) => {
                    return self.err(
                        self.pos,
                        format!("expected `+` or `-` between terms, found `{c}`"),
                    )
                }
            };
            self.pos += 1;
        }
        Ok(RewardSpec { terms })
    }

    fn weighted(&mut self) -> Result<(f64, Term)> {
        let weight = match self.peek() {
            Some(c) if c.is_ascii_digit() || c == '.' => {
                let at = self.pos;
                let w = self.number()?;
                self.expect('*', "`*` after the weight")?;
                if !w.is_finite() {
                    return self.err(at, "the weight is not finite");
                }
                w
            }
            _ => 1.0,
        };
        Ok((weight, self.term()?))
    }

    fn number(&mut self) -> Result<f64> {
        let start = self.pos;
        let mut end = self.pos;
        while let Some(&c) = self.chars.get(end) {
            let exp_sign = (c == '-' || c == '+') && end > start && matches!(self.chars[end - 1], 'e' | 'E');
            if c.is_ascii_digit() || c == '.' || c == 'e' || c == 'E' || exp_sign {
                end += 1;
            } else {
                break;
            }
        }
        let text: String = self.chars[start..end].iter().collect();
        self.pos = end;
        text.parse::<f64>()
            .or_else(|_| self.err(start, format!("bad number `{text}`")))
    }

    /// A (possibly empty) run of letters, digits and `_` after any whitespace, with its
    /// position.
    fn ident(&mut self) -> (String, usize) {
        self.skip_ws();
        let at = self.pos;
        while self
            .chars
            .get(self.pos)
            .is_some_and(|c| c.is_alphanumeric() || *c == '_')
        {
            self.pos += 1;
        }
        (self.chars[at..self.pos].iter().collect(), at)
    }

    fn term(&mut self) -> Result<Term> {
        let (name, at) = self.ident();
        if name.is_empty() {
            return match self.chars.get(at) {
                Some(c) => self.err(at, format!("expected a term name, found `{c}`")),
                None => self.err(at, "expected a term name, found the end"),
            };
        }
        let mut modifier = None;
        if self.peek() == Some(':') {
            self.pos += 1;
            modifier = Some(self.ident());
        }
        let args = if self.peek() == Some('(') {
            let open = self.pos;
            self.pos += 1;
            Some((self.args()?, open))
        } else {
            None
        };
        if let Some((m, m_at)) = &modifier {
            if name != "novelty" {
                return self.err(*m_at, format!("`{name}` takes no `:` modifier"));
            }
            if m.is_empty() {
                return self.err(*m_at, "expected `reference` or `population` after `novelty:`");
            }
        }
        let no_args = |p: &Self, t: Term| match &args {
            Some((_, open)) => p.err(*open, format!("`{name}` takes no arguments")),
            None => Ok(t),
        };
        match name.as_str() {
            "fluency" => no_args(self, Term::Fluency),
            "relevance" => no_args(self, Term::Relevance),
            "dat" => no_args(self, Term::Dat),
            "judge" => no_args(self, Term::Judge),
            "novelty" => {
                let from = match &modifier {
                    None => NoveltyFrom::Reference,
                    Some((m, m_at)) => match novelty_from(m) {
                        Ok(f) => f,
                        Err(e) => return self.err(*m_at, e),
                    },
                };
                no_args(self, Term::Novelty { from })
            }
            "regex" => {
                let args = self.need_args(&name, at, &args, 1, 1)?;
                let pattern = args[0].text().to_string();
                if let Err(e) = regex::Regex::new(&pattern) {
                    return self.err(args[0].at(), format!("bad regex: {e}"));
                }
                Ok(Term::Regex { pattern })
            }
            "keywords" => {
                let args = self.need_args(&name, at, &args, 1, usize::MAX)?;
                let mut words = Vec::new();
                for a in args {
                    if a.text().trim().is_empty() {
                        return self.err(a.at(), "empty keyword");
                    }
                    words.push(a.text().to_string());
                }
                Ok(Term::Keywords { words })
            }
            "length" => {
                let args = self.need_args(&name, at, &args, 1, 1)?;
                match args[0].text().parse::<usize>() {
                    Ok(n) if n > 0 => Ok(Term::Length { target: n }),
                    _ => self.err(
                        args[0].at(),
                        format!(
                            "length needs a positive whole number of words, not `{}`",
                            args[0].text()
                        ),
                    ),
                }
            }
            "command" => {
                let args = self.need_args(&name, at, &args, 1, 2)?;
                let program = args[0].text().to_string();
                if program.trim().is_empty() {
                    return self.err(args[0].at(), "empty command");
                }
                let timeout_secs = match args.get(1) {
                    None => DEFAULT_COMMAND_TIMEOUT_SECS,
                    Some(a) => match a.text().parse::<f64>() {
                        Ok(t) if t > 0.0 && t.is_finite() => t,
                        _ => {
                            return self.err(
                                a.at(),
                                format!(
                                    "the timeout must be a positive number of seconds, not `{}`",
                                    a.text()
                                ),
                            )
                        }
                    },
                };
                Ok(Term::Command {
                    program,
                    timeout_secs,
                })
            }
            _ => self.err(
                at,
                format!("unknown term `{name}` (known: {})", TERM_NAMES.join(", ")),
            ),
        }
    }

    fn need_args<'b>(
        &self,
        name: &str,
        at: usize,
        args: &'b Option<(Vec<Arg>, usize)>,
        min: usize,
        max: usize,
    ) -> Result<&'b [Arg]> {
        match args {
            None => self.err(
                at,
                format!("`{name}` needs arguments in parentheses, e.g. {}", example(name)),
            ),
            Some((a, open)) if a.len() < min || a.len() > max => self.err(
                *open,
                format!(
                    "`{name}` takes {} argument(s), got {}; e.g. {}",
                    arity(min, max),
                    a.len(),
                    example(name)
                ),
            ),
            Some((a, _)) => Ok(a),
        }
    }

    /// Arguments after `(` up to and including `)`.
    fn args(&mut self) -> Result<Vec<Arg>> {
        let mut out = Vec::new();
        if self.peek() == Some(')') {
            self.pos += 1;
            return Ok(out);
        }
        loop {
            let at = match self.peek() {
                Some(_) => self.pos,
                None => return self.err(self.pos, "unclosed `(`"),
            };
            let c = self.chars[at];
            if c == '\'' || c == '"' {
                self.pos += 1;
                let mut s = String::new();
                loop {
                    match self.chars.get(self.pos) {
                        None => return self.err(at, "unclosed quote"),
                        Some(&x) if x == c => {
                            self.pos += 1;
                            break;
                        }
                        Some('\\') if self.chars.get(self.pos + 1).is_some_and(|&n| n == c || n == '\\') => {
                            s.push(self.chars[self.pos + 1]);
                            self.pos += 2;
                        }
                        Some(&x) => {
                            s.push(x);
                            self.pos += 1;
                        }
                    }
                }
                out.push(Arg::Quoted(s, at));
            } else {
                let mut s = String::new();
                while let Some(&x) = self.chars.get(self.pos) {
                    if x == ',' || x == ')' || x == '(' || x == '\'' || x == '"' {
                        break;
                    }
                    s.push(x);
                    self.pos += 1;
                }
                let s = s.trim().to_string();
                if s.is_empty() {
                    return self.err(at, "empty argument");
                }
                out.push(Arg::Bare(s, at));
            }
            match self.peek() {
                Some(',') => self.pos += 1,
                Some(')') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(x) => return self.err(self.pos, format!("expected `,` or `)`, found `{x}`")),
                None => return self.err(self.pos, "unclosed `(`"),
            }
        }
    }
}

fn arity(min: usize, max: usize) -> String {
    match (min, max) {
        (a, b) if a == b => a.to_string(),
        (a, usize::MAX) => format!("at least {a}"),
        (a, b) => format!("{a} to {b}"),
    }
}

fn example(name: &str) -> &'static str {
    match name {
        "regex" => "regex('^1\\.')",
        "keywords" => "keywords(brick, wall)",
        "length" => "length(40)",
        _ => "command('python3 score.py', 10)",
    }
}
