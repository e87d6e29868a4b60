//! Reward specs: parsing, errors, the canonical round trip, TOML files, needs.

use std::path::Path;

use latentevo_reward::spec::DEFAULT_COMMAND_TIMEOUT_SECS;
use latentevo_reward::{NoveltyFrom, RewardError, RewardSpec, Term, WeightedTerm};

fn parse(s: &str) -> RewardSpec {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn parse_err(s: &str) -> (usize, String) {
    match s.parse::<RewardSpec>() {
        Err(RewardError::Spec { column, message, .. }) => (column, message),
        other => panic!("{s}: expected a spec error, got {other:?}"),
    }
}

fn wt(weight: f64, term: Term) -> WeightedTerm {
    WeightedTerm { weight, term }
}

#[test]
fn parses_the_examples() {
    assert_eq!(
        parse("novelty + 0.5*fluency").terms,
        vec![
            wt(
                1.0,
                Term::Novelty {
                    from: NoveltyFrom::Reference
                }
            ),
            wt(0.5, Term::Fluency)
        ]
    );
    assert_eq!(
        parse("relevance + 0.3*novelty:population - 0.1*length(40)").terms,
        vec![
            wt(1.0, Term::Relevance),
            wt(
                0.3,
                Term::Novelty {
                    from: NoveltyFrom::Population
                }
            ),
            wt(-0.1, Term::Length { target: 40 }),
        ]
    );
    let s = parse(r"regex('^1\.') + keywords(brick, wall) + command('python3 score.py') + judge + dat");
    assert_eq!(
        s.terms,
        vec![
            wt(
                1.0,
                Term::Regex {
                    pattern: r"^1\.".into()
                }
            ),
            wt(
                1.0,
                Term::Keywords {
                    words: vec!["brick".into(), "wall".into()]
                }
            ),
            wt(
                1.0,
                Term::Command {
                    program: "python3 score.py".into(),
                    timeout_secs: DEFAULT_COMMAND_TIMEOUT_SECS
                }
            ),
            wt(1.0, Term::Judge),
            wt(1.0, Term::Dat),
        ]
    );
    // Whitespace, a leading sign, exponents, a timeout, double quotes with escapes.
    let s = parse("  -fluency+2.5e-1 * novelty : reference - 1e2*command(\"echo \\\"hi\\\"\", 1.5)");
    assert_eq!(s.terms[0], wt(-1.0, Term::Fluency));
    assert_eq!(s.terms[1].weight, 0.25);
    assert_eq!(
        s.terms[2],
        wt(
            -100.0,
            Term::Command {
                program: "echo \"hi\"".into(),
                timeout_secs: 1.5
            }
        )
    );
}

#[test]
fn display_round_trips() {
    for s in [
        "novelty + 0.5*fluency",
        "relevance + 0.3*novelty:population - 0.1*length(40)",
        r"regex('^1\.') + keywords(brick, wall) + command('python3 score.py') + judge + dat",
        "-fluency - 0*dat + 1e-7*judge",
        r#"keywords('two words', "it's", x-ray, 'a,b') + regex('a\\b\'c') + command('sleep 1', 0.25)"#,
        "novelty:reference + 123456789.125*length(3)",
    ] {
        let spec = parse(s);
        let canonical = spec.to_string();
        assert_eq!(parse(&canonical), spec, "{s} => {canonical}");
        // Canonical is a fixed point.
        assert_eq!(parse(&canonical).to_string(), canonical);
    }
    assert_eq!(
        parse("relevance+0.3 * novelty:population-0.1*length( 40 )").to_string(),
        "relevance + 0.3*novelty:population - 0.1*length(40)"
    );
    assert_eq!(parse(r"regex('^1\.')").to_string(), r"regex('^1\\.')");
    assert_eq!(parse("command('x', 30)").to_string(), "command('x')");
}

#[test]
fn errors_name_the_problem_and_its_column() {
    // (spec, the column when it is worth pinning, what the message says)
    let cases: &[(&str, Option<usize>, &str)] = &[
        (
            "novelty + 0.5*fluncy",
            Some(15),
            "unknown term `fluncy` (known: fluency,",
        ),
        ("novelty + 0.5.1*fluency", Some(11), "bad number `0.5.1`"),
        ("length(forty)", Some(8), "`forty`"),
        ("length(0)", None, "positive"),
        ("regex('(')", Some(7), "bad regex"),
        ("novelty:elsewhere", Some(9), "`elsewhere`"),
        ("novelty:", None, "`reference` or `population`"),
        ("fluency:population", None, "modifier"),
        ("fluency(3)", Some(8), "takes no arguments"),
        ("keywords", None, "needs arguments"),
        ("keywords()", None, "at least 1"),
        ("keywords(a, '')", None, "empty keyword"),
        ("command('a', 0)", None, "timeout"),
        ("command('a', 1, 2)", None, "1 to 2"),
        ("regex('abc", Some(7), "unclosed quote"),
        ("keywords(a, b", None, "unclosed"),
        ("novelty fluency", Some(9), "`+` or `-`"),
        ("0.5 fluency", None, "`*`"),
        ("novelty +", None, "found the end"),
        ("novelty + *dat", Some(11), "found `*`"),
        ("   ", Some(1), "empty"),
    ];
    for (spec, column, want) in cases {
        let (col, msg) = parse_err(spec);
        assert!(msg.contains(want), "{spec}: {msg}");
        if let Some(c) = column {
            assert_eq!(col, *c, "{spec}: {msg}");
        }
    }
    let err = "1e999*fluency".parse::<RewardSpec>().unwrap_err();
    assert!(err.to_string().contains("not finite"), "{err}");
    assert!(err.to_string().contains("column 1"), "{err}");
}

#[test]
fn toml_files() {
    let text = r#"
[[term]]
name = "relevance"

[[term]]
name = "novelty"
weight = 0.3
from = "population"

[[term]]
name = "length"
weight = -0.1
target = 40

[[term]]
name = "regex"
pattern = '^1\.'

[[term]]
name = "keywords"
words = ["brick", "wall"]

[[term]]
name = "command"
program = "python3 score.py"
timeout = 10
"#;
    let spec = RewardSpec::from_toml_str(text, Path::new("r.toml")).unwrap();
    assert_eq!(
        spec,
        parse(
            r"relevance + 0.3*novelty:population - 0.1*length(40) + regex('^1\.') + keywords(brick, wall) + command('python3 score.py', 10)"
        )
    );
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("reward.toml");
    std::fs::write(&path, text).unwrap();
    assert_eq!(RewardSpec::from_arg(path.to_str().unwrap()).unwrap(), spec);
    assert_eq!(RewardSpec::from_arg("novelty").unwrap(), parse("novelty"));
    let err = RewardSpec::from_arg(tmp.path().join("nope.toml").to_str().unwrap()).unwrap_err();
    assert!(err.to_string().contains("nope.toml"), "{err}");

    let bad = |t: &str, want: &[&str]| {
        let err = RewardSpec::from_toml_str(t, Path::new("bad.toml")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("bad.toml: "), "{msg}");
        for w in want {
            assert!(msg.contains(w), "{msg} lacks {w}");
        }
    };
    bad(
        "[[term]]\nname = \"nolvety\"",
        &["term 1", "unknown term `nolvety`"],
    );
    bad(
        "[[term]]\nname = \"fluency\"\n[[term]]\nname = \"length\"",
        &["term 2", "`length`", "`target` is missing"],
    );
    bad(
        "[[term]]\nname = \"length\"\ntarget = 0",
        &["`target`", "positive integer"],
    );
    bad(
        "[[term]]\nname = \"dat\"\nwieght = 2",
        &["unknown field `wieght`"],
    );
    bad(
        "[[term]]\nname = \"dat\"\nweight = \"x\"",
        &["`weight`", "not a finite number"],
    );
    bad("[[term]]\nname = \"novelty\"\nfrom = \"x\"", &["`x`"]);
    bad("[[term]]\nname = \"regex\"\npattern = \"(\"", &["`pattern`"]);
    bad("[[term]]\nname = \"keywords\"\nwords = []", &["`words` is empty"]);
    bad("[[term]]\nweight = 1", &["`name` is missing"]);
    bad("spec = \"novelty\"", &["unknown table or key `spec`"]);
    bad("", &["no [[term]]"]);
    bad("[[term]\nname=", &["not valid TOML"]);
}

#[test]
fn needs_tell_the_engine_what_to_compute() {
    let n = parse("fluency + length(3) + regex('x')").needs();
    assert_eq!(n, Default::default());
    let n = parse("novelty:population + dat + judge").needs();
    assert!(n.embeddings && !n.reference_embedding && n.embedder && n.judge);
    assert!(!n.relevance && !n.command);
    let n = parse("novelty + relevance + command('true')").needs();
    assert!(n.embeddings && n.reference_embedding && n.relevance && n.command);
}
