//! End-to-end tests of `latentevo ideas` on a tiny fixture model.

use std::path::PathBuf;
use std::process::{Command, Output};

fn repo(path: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(path)
        .display()
        .to_string()
}

fn ideas(extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_latentevo"))
        .args(["ideas", "Give me three unusual uses for a brick."])
        .args([
            "--model",
            &repo("models/tiny/qwen3_moe"),
            "--embedder",
            &repo("models/tiny/minilm"),
        ])
        .args(["--population", "4", "--rounds", "2", "--max-new-tokens", "8"])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn prints_ideas_json_trace_and_plot() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.jsonl");
    let plot = dir.path().join("rounds.png");
    let out = ideas(&[
        "--json",
        "--trace",
        trace.to_str().unwrap(),
        "--plot",
        plot.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["config"]["population"], 4);
    assert_eq!(json["config"]["seed"], 0);
    assert_eq!(json["rounds"].as_array().unwrap().len(), 2);
    for key in [
        "mean_reward",
        "max_reward",
        "diversity",
        "mean_kl",
        "masked",
        "drift",
        "seconds",
    ] {
        assert!(
            json["rounds"][0].get(key).is_some(),
            "round statistics lack {key}"
        );
    }
    let listed = json["ideas"].as_array().unwrap();
    assert!(!listed.is_empty());
    assert!(listed[0]["text"].is_string() && listed[0]["latent"].as_array().unwrap().len() == 16);
    let lines = std::fs::read_to_string(&trace).unwrap();
    assert_eq!(
        lines.lines().count(),
        8,
        "one JSON line per candidate of every round"
    );
    for line in lines.lines() {
        let c: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(c["round"].is_u64() && c["text"].is_string());
    }
    let png = std::fs::read(&plot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    // The same seed prints the same ideas.
    let again = ideas(&["--json"]);
    let json2: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(json["ideas"], json2["ideas"]);
}

#[test]
fn human_output_lists_rounds_and_ideas() {
    let out = ideas(&[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("Unperturbed answer:") && text.contains("Ideas ("),
        "{text}"
    );
    assert!(text.contains("1. [reward "), "{text}");
}

#[test]
fn bad_flags_exit_with_status_2_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.jsonl");
    let missing = dir.path().join("no-such-reward.toml");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--population", "1"], "--population"),
        (vec!["--rounds", "0"], "--rounds"),
        (vec!["--layer", "99"], "--layer"),
        (vec!["--kl-target", "0"], "--kl-target"),
        (vec!["--kl-target", "NaN"], "--kl-target"),
        (vec!["--scale", "-1"], "--scale"),
        (vec!["--reward", "novelty + 0.5*nonsense"], "nonsense"),
        (vec!["--reward-file", missing.to_str().unwrap()], "--reward-file"),
        (vec!["--basis", "sideways"], "sideways"),
        (vec!["--fitness-temperature", "0"], "--fitness-temperature"),
    ];
    for (flags, needle) in cases {
        let mut args = flags.clone();
        args.extend(["--trace", trace.to_str().unwrap()]);
        let out = ideas(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{flags:?}: error should name `{needle}`: {stderr}"
        );
        assert!(!trace.exists(), "{flags:?} left a partial output file");
    }
}

#[test]
fn a_failing_reward_command_is_reported_not_fatal() {
    let out = ideas(&["--reward", "novelty + command('exit 3')"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("warning:"), "{stderr}");
}
