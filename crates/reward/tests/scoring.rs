//! Scoring batches: term values, masking, missing inputs, external scorers.

use std::path::Path;
use std::time::{Duration, Instant};

use candle_core::Device;
use latentevo_reward::command::{run_scorer, ScorerInput};
use latentevo_reward::scoring::dat_words;
use latentevo_reward::{
    cosine, score_batch, Candidate, Context, Embedder, MaskReason, RewardError, RewardSpec,
};

fn spec(s: &str) -> RewardSpec {
    s.parse().unwrap()
}

fn cand(text: &str) -> Candidate<'_> {
    Candidate {
        text,
        fluency: -1.5,
        ..Candidate::default()
    }
}

fn tiny() -> Embedder {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/tiny/minilm");
    Embedder::load(&dir, &Device::Cpu).unwrap()
}

#[test]
fn weighted_sum_of_plain_terms() {
    let c = [
        Candidate {
            relevance: Some(0.4),
            judge: Some(0.9),
            ..cand("1. Build a small wall with a brick")
        },
        Candidate {
            relevance: Some(-0.2),
            judge: Some(0.1),
            ..cand("Paint the Brick red and use it as a doorstop")
        },
    ];
    let s = spec(
        r"fluency + 2*relevance + judge + regex('^1\.') + keywords(brick, wall, 'red and') - 0.5*length(4)",
    );
    let out = score_batch(&s, &Context::default(), &c).unwrap();
    assert!(out.reports.is_empty(), "{:?}", out.reports);
    // Candidate 0: 8 words; keywords brick + wall of 3.
    let want0 = -1.5 + 0.8 + 0.9 + 1.0 + 2.0 / 3.0 - 0.5 * -(4.0 / 4.0);
    // Candidate 1: 10 words; keywords brick + "red and" of 3; no "1." prefix.
    let want1 = -1.5 - 0.4 + 0.1 + 0.0 + 2.0 / 3.0 - 0.5 * -(6.0 / 4.0);
    assert!((out.scores[0].total - want0).abs() < 1e-12, "{:?}", out.scores[0]);
    assert!((out.scores[1].total - want1).abs() < 1e-12, "{:?}", out.scores[1]);
    let names: Vec<&str> = out.scores[0].terms.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "fluency",
            "relevance",
            "judge",
            r"regex('^1\\.')",
            "keywords(brick, wall, 'red and')",
            "length(4)"
        ]
    );
    assert_eq!(out.totals().len(), 2);
    assert_eq!(out.masked_count(), 0);
}

#[test]
fn degenerate_and_non_finite_candidates_are_masked() {
    let c = [
        cand("A fine answer about bricks."),
        cand("or or or or or"),
        Candidate {
            fluency: f64::NAN,
            ..cand("Another fine answer.")
        },
        cand(""),
    ];
    let out = score_batch(&spec("fluency + length(5)"), &Context::default(), &c).unwrap();
    assert!(out.scores[0].total.is_finite() && out.scores[0].masked.is_none());
    assert!(matches!(out.scores[1].masked, Some(MaskReason::Degenerate(_))));
    assert_eq!(
        out.scores[2].masked,
        Some(MaskReason::NotFinite {
            term: "fluency".into()
        })
    );
    assert!(matches!(out.scores[3].masked, Some(MaskReason::Degenerate(_))));
    for i in 1..4 {
        assert!(out.scores[i].total.is_nan());
        // Term values are still reported for traces.
        assert_eq!(out.scores[i].terms.len(), 2);
    }
    assert_eq!(out.masked_count(), 3);
    assert_eq!(out.reports, vec!["2 of 4 candidates degenerate (masked)"]);
    assert!(out.scores[1]
        .masked
        .as_ref()
        .unwrap()
        .to_string()
        .starts_with("degenerate: loop"));
}

#[test]
fn missing_inputs_are_errors_naming_the_term() {
    let c = [cand("a brick"), cand("a wall")];
    let ctx = Context::default();
    let err = score_batch(&spec("fluency + relevance"), &ctx, &c).unwrap_err();
    assert!(
        matches!(&err, RewardError::MissingInput { term, .. } if term == "relevance"),
        "{err:?}"
    );
    assert!(err.to_string().contains("candidate 0"), "{err}");
    let err = score_batch(&spec("judge"), &ctx, &c).unwrap_err();
    assert!(err.to_string().contains("`judge`"), "{err}");
    let err = score_batch(&spec("dat"), &ctx, &c).unwrap_err();
    assert!(
        err.to_string().contains("`dat`") && err.to_string().contains("embedder"),
        "{err}"
    );
    let err = score_batch(&spec("novelty:population"), &ctx, &c).unwrap_err();
    assert!(err.to_string().contains("`novelty:population`"), "{err}");
    // Embeddings given but no reference for novelty:reference.
    let e = [1.0f32, 0.0];
    let with_emb: Vec<Candidate<'_>> = c
        .iter()
        .map(|x| Candidate {
            embedding: Some(&e),
            ..*x
        })
        .collect();
    let err = score_batch(&spec("novelty"), &ctx, &with_emb).unwrap_err();
    assert!(err.to_string().contains("reference"), "{err}");
    // Dimensions that differ.
    let r = [1.0f32, 0.0, 0.0];
    let ctx = Context {
        reference_embedding: Some(&r),
        ..Context::default()
    };
    let err = score_batch(&spec("novelty"), &ctx, &with_emb).unwrap_err();
    assert!(matches!(err, RewardError::BadInput(_)), "{err:?}");
}

#[test]
fn novelty_from_reference_and_population_with_given_embeddings() {
    let e = [vec![1.0f32, 0.0], vec![0.0, 1.0], vec![0.6, 0.8], vec![1.0, 0.0]];
    let texts = ["one idea here", "another idea here", "a third idea", ""];
    let c: Vec<Candidate<'_>> = (0..4)
        .map(|i| Candidate {
            embedding: Some(&e[i]),
            ..cand(texts[i])
        })
        .collect();
    let r = [0.8f32, 0.6];
    let ctx = Context {
        reference_embedding: Some(&r),
        ..Context::default()
    };
    let out = score_batch(&spec("novelty + novelty:population"), &ctx, &c).unwrap();
    for (score, emb) in out.scores.iter().zip(&e) {
        let from_ref = score.terms[0].1;
        assert!((from_ref - (1.0 - cosine(emb, &r))).abs() < 1e-12);
    }
    // Population: the nearest other non-degenerate candidate (candidate 3 is empty, so
    // it does not count as a neighbour of candidate 0, though it is identical).
    let pop: Vec<f64> = out.scores.iter().map(|s| s.terms[1].1).collect();
    assert!((pop[0] - (1.0 - 0.6)).abs() < 1e-6, "{pop:?}");
    assert!((pop[1] - (1.0 - 0.8)).abs() < 1e-6, "{pop:?}");
    assert!((pop[2] - (1.0 - 0.8)).abs() < 1e-6, "{pop:?}");
    assert!(out.scores[3].masked.is_some());
    // A single candidate has no neighbour: population novelty 0.
    let one = score_batch(&spec("novelty:population"), &ctx, &c[..1]).unwrap();
    assert_eq!(one.scores[0].terms[0].1, 0.0);
}

#[test]
fn embedder_fills_in_missing_embeddings_and_dat() {
    let embedder = tiny();
    let texts = ["a red brick wall", "music and art", "the cat and the dog"];
    let c: Vec<Candidate<'_>> = texts.iter().map(|t| cand(t)).collect();
    let ctx = Context {
        reference_text: "a red brick wall",
        embedder: Some(&embedder),
        ..Context::default()
    };
    let out = score_batch(&spec("novelty + dat"), &ctx, &c).unwrap();
    let v = embedder.embed(&texts).unwrap();
    // Candidate 0 equals the reference: novelty ~0.
    // (Batched and single embeddings agree to ~1e-6, hence the tolerance.)
    assert!(out.scores[0].terms[0].1.abs() < 1e-5);
    assert!((out.scores[1].terms[0].1 - (1.0 - cosine(&v[1], &v[0]))).abs() < 1e-5);
    // DAT of candidate 0: words red, brick, wall ("a" too short).
    assert_eq!(dat_words(texts[0]), ["red", "brick", "wall"]);
    let w = embedder.embed(&["red", "brick", "wall"]).unwrap();
    let want = 100.0
        * ((1.0 - cosine(&w[0], &w[1])) + (1.0 - cosine(&w[0], &w[2])) + (1.0 - cosine(&w[1], &w[2])))
        / 3.0;
    assert!(
        (out.scores[0].terms[1].1 - want).abs() < 1e-4,
        "{} vs {want}",
        out.scores[0].terms[1].1
    );
    // Candidate 2: only "cat", "dog" survive the stop words.
    assert_eq!(dat_words(texts[2]), ["cat", "dog"]);
    // One content word => DAT 0.
    let single = score_batch(&spec("dat"), &ctx, &[cand("the brick")]).unwrap();
    assert_eq!(single.scores[0].terms[0].1, 0.0);
    // Same input, same output.
    assert_eq!(score_batch(&spec("novelty + dat"), &ctx, &c).unwrap(), out);
}

#[test]
fn dat_words_rules() {
    let w = dat_words("The Elephant, the elephant and a JET-plane; 42 ox zebras!");
    assert_eq!(w, ["elephant", "jet", "plane", "zebras"]);
    let many = dat_words("apple banana cherry damson elder fig grape hazel iris juniper kiwi lime");
    assert_eq!(many.len(), 10);
    assert_eq!(many[9], "juniper");
}

fn inputs(n: usize) -> Vec<ScorerInput<'static>> {
    (0..n)
        .map(|index| ScorerInput {
            index,
            prompt: "p",
            text: "t",
            reference: "r",
        })
        .collect()
}

#[test]
fn command_scorer_good_and_bad_outputs() {
    let t = Duration::from_secs(20);
    // Good: reads stdin, one number per line (trailing blank line ignored).
    let out = run_scorer("cat >/dev/null; echo 1; echo 2; echo", &inputs(2), t);
    assert_eq!(out.scores, vec![Ok(1.0), Ok(2.0)]);
    assert_eq!(out.report, None);
    // It gets one JSON line per candidate.
    let tmp = tempfile::tempdir().unwrap();
    let seen = tmp.path().join("seen.jsonl");
    let out = run_scorer(
        &format!("cat > '{}'; echo 1; echo 2", seen.display()),
        &[
            ScorerInput {
                index: 0,
                prompt: "the prompt",
                text: "héllo \"q\"\n",
                reference: "ref",
            },
            ScorerInput {
                index: 1,
                prompt: "the prompt",
                text: "",
                reference: "ref",
            },
        ],
        t,
    );
    assert_eq!(out.scores, vec![Ok(1.0), Ok(2.0)]);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&seen)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines,
        vec![
            serde_json::json!({"index": 0, "prompt": "the prompt", "text": "héllo \"q\"\n", "reference": "ref"}),
            serde_json::json!({"index": 1, "prompt": "the prompt", "text": "", "reference": "ref"}),
        ]
    );
    // Non-zero exit: all masked, stderr quoted.
    let out = run_scorer("echo oops >&2; exit 3", &inputs(16), t);
    assert!(out.scores.iter().all(|s| s.is_err()));
    let r = out.report.unwrap();
    assert!(
        r.contains("exited with status 3") && r.contains("oops") && r.contains("16 candidates masked"),
        "{r}"
    );
    // Not a number: that candidate only.
    let out = run_scorer("echo abc; echo 2; echo inf", &inputs(3), t);
    assert!(out.scores[0].is_err() && out.scores[2].is_err());
    assert_eq!(out.scores[1], Ok(2.0));
    let r = out.report.unwrap();
    assert!(r.contains("`abc`") && r.contains("2 candidates masked"), "{r}");
    // Too few lines: the rest masked.
    let out = run_scorer("echo 1", &inputs(3), t);
    assert_eq!(out.scores[0], Ok(1.0));
    assert!(out.scores[1].is_err() && out.scores[2].is_err());
    assert!(out.report.unwrap().contains("printed 1 lines for 3 candidates"));
    // Too many lines: alignment unknown, all masked.
    let out = run_scorer("echo 1; echo 2; echo 3", &inputs(2), t);
    assert!(out.scores.iter().all(|s| s.is_err()));
    // A program that does not exist: the shell exits 127.
    let out = run_scorer("/no/such/scorer", &inputs(2), t);
    assert!(out.scores.iter().all(|s| s.is_err()));
    assert!(out.report.unwrap().contains("127"));
    // A crash (killed by a signal).
    let out = run_scorer("kill -SEGV $$", &inputs(1), t);
    assert!(out.scores[0].is_err());
    assert!(out.report.unwrap().contains("signal"));
}

#[test]
fn command_scorer_timeout_kills_and_masks() {
    let start = Instant::now();
    let out = run_scorer("sleep 5; echo 1", &inputs(2), Duration::from_secs(1));
    let took = start.elapsed();
    assert!(took < Duration::from_secs(4), "took {took:?}");
    assert!(out.scores.iter().all(|s| s.is_err()));
    assert!(out.report.unwrap().contains("timed out after 1.0 s"));
}

#[test]
fn command_term_in_a_batch_masks_and_reports() {
    let c = [cand("first answer"), cand("second answer"), cand("third answer")];
    let ctx = Context {
        prompt: "prompt",
        ..Context::default()
    };
    let out = score_batch(
        &spec("fluency + command('cat >/dev/null; echo 0.5; echo x')"),
        &ctx,
        &c,
    )
    .unwrap();
    assert!((out.scores[0].total - (-1.5 + 0.5)).abs() < 1e-12);
    assert!(matches!(out.scores[1].masked, Some(MaskReason::Command(_))));
    assert!(matches!(out.scores[2].masked, Some(MaskReason::Command(_))));
    assert_eq!(out.reports.len(), 1);
    assert!(
        out.reports[0].contains("2 candidates masked"),
        "{:?}",
        out.reports
    );
    // An empty batch runs nothing.
    let none = score_batch(&spec("command('exit 1') + fluency"), &ctx, &[]).unwrap();
    assert!(none.scores.is_empty() && none.reports.is_empty());
    let out = score_batch(&spec("command('exit 1', 5)"), &ctx, &c).unwrap();
    assert!(out.scores.iter().all(|s| s.total.is_nan()));
    assert!(out.reports[0].contains("3 candidates masked"));
}
