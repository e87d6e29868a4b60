//! End-to-end tests of `latentevo eval` on a tiny fixture model: a run, kill and resume,
//! shards and merge, bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn repo(path: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(path)
        .display()
        .to_string()
}

const PROMPTS: &str = r#"{"id": "brick", "prompt": "Give me three unusual uses for a brick."}
{"id": "canteen", "prompt": "Ways to reduce food waste in a school canteen."}
{"id": "nouns", "prompt": "Write 10 nouns, as unrelated as possible.", "reward": "dat + 0.1*fluency"}
"#;

/// A reward whose external scorer sleeps, so that a run lasts long enough to be killed.
const SLOW_REWARD: &str = "novelty + command('sleep 0.15; while read -r l; do echo 0; done')";

fn write_prompts(dir: &Path, text: &str) -> String {
    let path = dir.join("prompts.jsonl");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn base_args(prompts: &str, out: &Path, methods: &str) -> Vec<String> {
    [
        "eval",
        "--prompts",
        prompts,
        "--out",
        out.to_str().unwrap(),
        "--methods",
        methods,
        "--budget",
        "4",
        "--population",
        "2",
        "--top-k",
        "2",
        "--max-new-tokens",
        "5",
        "--bootstrap",
        "200",
        "--model",
        &repo("models/tiny/qwen3_moe"),
        "--embedder",
        &repo("models/tiny/minilm"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn latentevo(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_latentevo"))
        .args(args)
        .output()
        .unwrap()
}

/// `args` with `extra` flags: a flag already there gets the new value, others are appended.
fn with(mut args: Vec<String>, extra: &[&str]) -> Vec<String> {
    let mut i = 0;
    while i < extra.len() {
        let flag = extra[i];
        let value = extra.get(i + 1).filter(|v| !v.starts_with("--"));
        match (args.iter().position(|a| a == flag), value) {
            (Some(at), Some(v)) => args[at + 1] = v.to_string(),
            (None, Some(v)) => args.extend([flag.to_string(), v.to_string()]),
            (_, None) => args.push(flag.to_string()),
        }
        i += if value.is_some() { 2 } else { 1 };
    }
    args
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "status {:?}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The results lines of a directory, parsed, without their timing.
fn lines(dir: &Path, file: &str) -> Vec<Value> {
    std::fs::read_to_string(dir.join(file))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("timing");
            v
        })
        .collect()
}

/// summary.json without the per-method seconds (timing).
fn summary(dir: &Path) -> Value {
    let mut v: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    for g in v["groups"].as_array_mut().unwrap() {
        g.as_object_mut().unwrap().remove("seconds");
    }
    v
}

#[test]
fn three_prompts_two_methods_complete_with_lines_summary_and_plots() {
    let tmp = tempfile::tempdir().unwrap();
    let prompts = write_prompts(tmp.path(), PROMPTS);
    let out = tmp.path().join("run");
    let args = base_args(&prompts, &out, "diffevo,best-of-n[t=0.7]");
    let run = latentevo(&args);
    ok(&run);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains("matched fluency n/a"), "{stdout}");

    let results = lines(&out, "results.jsonl");
    assert_eq!(results.len(), 6, "3 prompts x 2 methods");
    let keys: Vec<(String, String)> = results
        .iter()
        .map(|r| {
            (
                r["prompt_id"].as_str().unwrap().into(),
                r["method"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(keys[0], ("brick".into(), "diffevo".into()));
    assert_eq!(keys[5], ("nouns".into(), "best-of-n[t=0.7]".into()));
    for r in &results {
        assert_eq!(r["set"], "prompts");
        assert_eq!(r["budget"]["continuations"], 4);
        assert_eq!(r["budget"]["rounds"], 2);
        assert_eq!(r["config"]["population"], 2);
        assert!(r["reference"].is_string());
        let m = &r["metrics"];
        let count = m["count"].as_u64().unwrap();
        assert!(count <= 2 && r["ideas"].as_array().unwrap().len() as u64 == count);
        let vendi = m["vendi"].as_f64().unwrap();
        if count > 0 {
            assert!(vendi >= 1.0 - 1e-9 && vendi <= count as f64 + 1e-9, "{m}");
            assert!(r["ideas"][0]["text"].is_string());
        } else {
            assert_eq!(vendi, 0.0);
        }
        let masked = m["masked_share"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&masked));
        assert!(m["distinct_ideas"].as_u64().unwrap() <= count);
        assert_eq!(r["pool"]["candidates"], 4);
        let expected_unmasked = ((1.0 - masked) * 4.0).round() as u64;
        assert_eq!(r["pool"]["unmasked"].as_u64().unwrap(), expected_unmasked);
    }
    // The prompt's own reward is used; the others get the default.
    assert_eq!(results[4]["config"]["reward"], "dat + 0.1*fluency");
    assert!(results[0]["config"]["reward"]
        .as_str()
        .unwrap()
        .contains("relevance"));
    // Sampling has no perturbation: KL 0 and no scale.
    assert_eq!(results[1]["config"]["scale"], "none");
    assert_eq!(results[1]["calibration"]["scale"], 0.0);
    assert_eq!(results[0]["config"]["scale"]["kl-target"], 0.1);

    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(manifest["items"], 6);
    assert_eq!(manifest["configuration"]["budget"], 4);
    assert_eq!(manifest["plan"]["methods"][1]["config"]["temperature"], 0.7);
    let s = summary(&out);
    assert_eq!(s["items"], 6);
    let group = &s["groups"][0];
    assert_eq!(group["prompts"], 3);
    assert!(group["matched"]["unavailable"]
        .as_str()
        .unwrap()
        .contains("two or more temperatures"));
    let diffevo = &group["methods"][0];
    assert_eq!(diffevo["method"], "diffevo");
    assert_eq!(diffevo["metrics"]["continuations"]["mean"], 4.0);
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        md.contains("| diffevo | 3 |") && md.contains("n/a: needs best-of-n"),
        "{md}"
    );
    for plot in [
        "prompts-frontier-ideas.png",
        "prompts-frontier-pool.png",
        "prompts-reward-vs-vendi.png",
    ] {
        let png = std::fs::read(out.join("plots").join(plot)).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{plot}");
    }

    // The same seed gives the same lines; another seed other ones.
    let again = tmp.path().join("again");
    ok(&latentevo(&base_args(
        &prompts,
        &again,
        "diffevo,best-of-n[t=0.7]",
    )));
    assert_eq!(lines(&again, "results.jsonl"), results);
    assert_eq!(summary(&again), s);
    let other = tmp.path().join("other");
    ok(&latentevo(&with(
        base_args(&prompts, &other, "diffevo,best-of-n[t=0.7]"),
        &["--seed", "5"],
    )));
    assert_ne!(lines(&other, "results.jsonl"), results);
}

/// Spawns a slow run, waits until its results file has a complete line, then sends it
/// `signal` (`KILL` or `INT`).
fn start_and_signal(args: &[String], results: &Path, signal: &str) -> std::process::ExitStatus {
    let mut child = Command::new(env!("CARGO_BIN_EXE_latentevo"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        let lines = std::fs::read_to_string(results)
            .map(|t| t.matches('\n').count())
            .unwrap_or(0);
        if lines >= 1 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be interrupted"
        );
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no line after 120 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    if signal == "KILL" {
        child.kill().unwrap(); // SIGKILL on Unix
    } else {
        // The shell's own `kill` (no procps needed).
        let status = Command::new("sh")
            .args(["-c", &format!("kill -s {signal} {}", child.id())])
            .status()
            .unwrap();
        assert!(status.success());
    }
    child.wait().unwrap()
}

#[test]
fn a_run_killed_midway_and_resumed_equals_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let prompts = write_prompts(tmp.path(), PROMPTS);
    let methods = "diffevo,best-of-n[t=0.7]";
    let full = tmp.path().join("full");
    ok(&latentevo(&with(
        base_args(&prompts, &full, methods),
        &["--reward", SLOW_REWARD],
    )));
    let expected = lines(&full, "results.jsonl");
    assert_eq!(expected.len(), 6);

    let killed = tmp.path().join("killed");
    let args = with(base_args(&prompts, &killed, methods), &["--reward", SLOW_REWARD]);
    let status = start_and_signal(&args, &killed.join("results.jsonl"), "KILL");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "killed by SIGKILL: {status:?}");
    let partial = std::fs::read_to_string(killed.join("results.jsonl")).unwrap();
    let complete = partial.matches('\n').count();
    assert!((1..6).contains(&complete), "killed midway: {complete} lines");

    // Without --resume the directory is refused; with it the run completes.
    let refused = latentevo(&args);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--resume"));
    let resumed = latentevo(&with(args, &["--resume"]));
    ok(&resumed);
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(stderr.contains(&format!("{complete} already done")), "{stderr}");
    assert_eq!(lines(&killed, "results.jsonl"), expected);
    assert_eq!(summary(&killed), summary(&full));
}

#[test]
fn ctrl_c_abandons_the_item_in_flight_and_exits_non_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let prompts = write_prompts(tmp.path(), PROMPTS);
    let out = tmp.path().join("run");
    let args = with(
        base_args(&prompts, &out, "diffevo,best-of-n[t=0.7]"),
        &["--reward", SLOW_REWARD],
    );
    let status = start_and_signal(&args, &out.join("results.jsonl"), "INT");
    assert_eq!(status.code(), Some(130));
    let text = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
    assert!(text.ends_with('\n'), "no partial line");
    let n = text.lines().count();
    assert!((1..6).contains(&n), "{n} lines");
    for l in text.lines() {
        serde_json::from_str::<Value>(l).unwrap();
    }
    assert!(
        !out.join("summary.md").exists(),
        "no summary for an unfinished run"
    );
    ok(&latentevo(&with(args, &["--resume"])));
    assert_eq!(lines(&out, "results.jsonl").len(), 6);
}

#[test]
fn a_torn_last_line_is_reported_and_dropped_on_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let prompts = write_prompts(tmp.path(), PROMPTS);
    let out = tmp.path().join("run");
    let args = base_args(&prompts, &out, "diffevo,sample[t=0.7]");
    ok(&latentevo(&args));
    let path = out.join("results.jsonl");
    let good = std::fs::read_to_string(&path).unwrap();
    // Cut the last line in half, as a crash during its write would.
    let last_start = good[..good.len() - 1].rfind('\n').unwrap() + 1;
    let cut = &good[..last_start + (good.len() - last_start) / 2];
    std::fs::write(&path, cut).unwrap();
    let resumed = latentevo(&with(args, &["--resume"]));
    ok(&resumed);
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(
        stderr.contains("results.jsonl:6:") && stderr.contains("dropped"),
        "{stderr}"
    );
    let after = std::fs::read_to_string(&path).unwrap();
    assert_eq!(after.lines().count(), 6);
    assert_eq!(
        &after[..last_start],
        &good[..last_start],
        "the good lines are untouched"
    );
}

#[test]
fn merged_shards_equal_the_unsharded_run() {
    let tmp = tempfile::tempdir().unwrap();
    let prompts = write_prompts(tmp.path(), PROMPTS);
    let methods = "diffevo,best-of-n";
    let sweep = ["--temperatures", "0.5,1.0"];
    let whole = tmp.path().join("whole");
    ok(&latentevo(&with(base_args(&prompts, &whole, methods), &sweep)));
    let mut dirs = Vec::new();
    for i in 0..3 {
        let dir = tmp.path().join(format!("shard-{i}"));
        let shard = format!("{i}/3");
        ok(&latentevo(&with(
            base_args(&prompts, &dir, methods),
            &[sweep[0], sweep[1], "--shard", &shard],
        )));
        let n = lines(&dir, &format!("results-shard-{i}-of-3.jsonl")).len();
        assert_eq!(n, 3, "9 items round-robin over 3 shards");
        dirs.push(dir.display().to_string());
    }
    let merged = tmp.path().join("merged");
    let merge = |dirs: &[&str], out: &Path| {
        let mut a = vec!["eval".to_string(), "merge".to_string()];
        a.extend(dirs.iter().map(|s| s.to_string()));
        a.extend([
            "--out".to_string(),
            out.display().to_string(),
            "--bootstrap".into(),
            "200".into(),
        ]);
        latentevo(&a)
    };
    let d: Vec<&str> = dirs.iter().map(String::as_str).collect();
    ok(&merge(&[d[2], d[0], d[1]], &merged));
    assert_eq!(lines(&merged, "results.jsonl"), lines(&whole, "results.jsonl"));
    let s = summary(&merged);
    assert_eq!(s, summary(&whole));
    // The sweep gives sampling a curve: the matched comparison is computed.
    let matched = &s["groups"][0]["matched"];
    assert!(matched["unavailable"].is_null(), "{matched}");
    assert_eq!(matched["curve"].as_array().unwrap().len(), 2);
    assert_eq!(matched["rows"][0]["method"], "diffevo");
    let row = &matched["rows"][0];
    let counted =
        row["inside"].as_u64().unwrap() + row["below"].as_u64().unwrap() + row["above"].as_u64().unwrap();
    assert!(counted <= 3);

    // Problems are named.
    let e = merge(&[d[0], d[1]], &tmp.path().join("m2"));
    assert!(String::from_utf8_lossy(&e.stderr).contains("shard 2/3 is missing"));
    let e = merge(&[d[0], d[1], d[1]], &tmp.path().join("m3"));
    assert!(String::from_utf8_lossy(&e.stderr).contains("given twice"));
    let reseeded = tmp.path().join("reseeded");
    ok(&latentevo(&with(
        base_args(&prompts, &reseeded, methods),
        &[sweep[0], sweep[1], "--shard", "2/3", "--seed", "9"],
    )));
    let e = merge(&[d[0], d[1], reseeded.to_str().unwrap()], &tmp.path().join("m4"));
    let stderr = String::from_utf8_lossy(&e.stderr);
    assert!(stderr.contains("`configuration.seed`"), "{stderr}");
    // An item missing from a shard (its last line removed).
    let shard0 = Path::new(d[0]).join("results-shard-0-of-3.jsonl");
    let text = std::fs::read_to_string(&shard0).unwrap();
    let cut: String = text.lines().take(2).map(|l| format!("{l}\n")).collect();
    std::fs::write(&shard0, cut).unwrap();
    let e = merge(&[d[0], d[1], d[2]], &tmp.path().join("m5"));
    let stderr = String::from_utf8_lossy(&e.stderr);
    assert!(stderr.contains("is missing: it belongs to shard 0/3"), "{stderr}");

    // `eval summary` regenerates the same summary.
    std::fs::remove_file(whole.join("summary.json")).unwrap();
    let out = latentevo(&[
        "eval".into(),
        "summary".into(),
        whole.display().to_string(),
        "--bootstrap".into(),
        "200".into(),
    ]);
    ok(&out);
    assert_eq!(summary(&whole), s);
}

#[test]
fn a_malformed_prompt_line_is_reported_and_the_rest_proceeds() {
    let tmp = tempfile::tempdir().unwrap();
    let text = "{\"id\": \"a\", \"prompt\": \"Uses for a paperclip?\"}\n{\"id\": \"b\", \"prompt\": \n{\"id\": \"c\", \"prompt\": \"Uses for a spoon?\"}\n";
    let prompts = write_prompts(tmp.path(), text);
    let out = tmp.path().join("run");
    let run = latentevo(&base_args(&prompts, &out, "sample[t=0.7],best-of-n[t=0.7]"));
    ok(&run);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("prompts.jsonl:2: not valid JSON"), "{stderr}");
    assert!(stderr.contains("line skipped"), "{stderr}");
    let results = lines(&out, "results.jsonl");
    let ids: Vec<&str> = results.iter().map(|r| r["prompt_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["a", "a", "c", "c"]);
    // `sample` generates K continuations and returns them as they came.
    assert_eq!(results[0]["budget"]["continuations"], 2);
    assert_eq!(results[0]["ideas"].as_array().unwrap().len(), 2);
    let manifest = std::fs::read_to_string(out.join("run.json")).unwrap();
    assert!(
        manifest.contains("prompts.jsonl:2:"),
        "the manifest records the skipped line"
    );
}

#[test]
fn bad_input_exits_with_status_2_and_names_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let prompts = write_prompts(tmp.path(), PROMPTS);
    let dup = tmp.path().join("dup.jsonl");
    std::fs::write(
        &dup,
        "{\"id\": \"x\", \"prompt\": \"p\"}\n{\"id\": \"x\", \"prompt\": \"q\"}\n",
    )
    .unwrap();
    let out = tmp.path().join("never");
    let args = |methods: &str, extra: &[&str]| with(base_args(&prompts, &out, methods), extra);
    let cases: Vec<(Vec<String>, &str)> = vec![
        (args("diffevo,telepathy", &[]), "unknown method `telepathy`"),
        (args("diffevo[colour=red]", &[]), "unknown key `colour`"),
        (args("diffevo[kl=0]", &[]), "`kl`: must be a finite number > 0"),
        (
            args("diffevo", &["--budget", "5"]),
            "--budget: 5 is not a multiple of the population 2",
        ),
        (
            args("diffevo", &["--budget", "1"]),
            "--budget: must be at least 2",
        ),
        (args("diffevo", &["--population", "1"]), "--population"),
        (args("diffevo", &["--shard", "3/3"]), "--shard"),
        (args("diffevo", &["--temperatures", "0.5,-1"]), "--temperatures"),
        (args("diffevo[layer=99]", &[]), "--layer"),
        (args("diffevo", &["--reward", "novelty + nonsense"]), "nonsense"),
        (
            with(base_args(dup.to_str().unwrap(), &out, "diffevo"), &[]),
            "duplicate id `x` on lines 1 and 2",
        ),
        (
            with(base_args("/no/such/file.jsonl", &out, "diffevo"), &[]),
            "/no/such/file.jsonl",
        ),
    ];
    for (a, needle) in cases {
        let o = latentevo(&a);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{needle}: {stderr}");
        assert!(stderr.contains(needle), "error should name `{needle}`: {stderr}");
        assert!(!out.exists(), "{needle}: left output behind");
    }
    // Resuming into a run of another configuration names the field.
    let run = tmp.path().join("run");
    ok(&latentevo(&base_args(&prompts, &run, "sample[t=0.7]")));
    let o = latentevo(&with(
        base_args(&prompts, &run, "sample[t=0.7]"),
        &["--resume", "--max-new-tokens", "6"],
    ));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`configuration.max_new_tokens`") && stderr.contains("recorded 5, now 6"),
        "{stderr}"
    );
    // Resuming a finished run does nothing more.
    let o = latentevo(&with(base_args(&prompts, &run, "sample[t=0.7]"), &["--resume"]));
    ok(&o);
    assert!(String::from_utf8_lossy(&o.stderr).contains("0 items to run"));
}
