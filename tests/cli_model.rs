//! End-to-end tests of `latentevo inspect` and `latentevo forward`.

use std::path::PathBuf;
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_latentevo"))
}

fn fixture(family: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("models/tiny")
        .join(family)
        .display()
        .to_string()
}

#[test]
fn inspect_reports_experts_and_parameters() {
    let out = bin()
        .args(["inspect", &fixture("qwen2_moe"), "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["family"], "Qwen2MoeForCausalLM");
    assert_eq!(json["layers"], 3);
    assert_eq!(json["moe_layers"], serde_json::json!([0, 2]));
    assert_eq!(json["experts"], 6);
    assert_eq!(json["top_k"], 2);
    assert_eq!(json["tokenizer_vocab"], 512);
    // transformers counts every tensor; the config-derived count leaves out only the
    // q/k/v biases: 64 + 32 + 32 per layer, 3 layers.
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(PathBuf::from(fixture("qwen2_moe")).join("reference.json")).unwrap(),
    )
    .unwrap();
    let total = json["parameters_total"].as_u64().unwrap();
    let biases = 3 * (64 + 32 + 32);
    assert_eq!(total + biases, reference["num_parameters"].as_u64().unwrap());
    assert!(json["parameters_active"].as_u64().unwrap() < total);
}

#[test]
fn forward_json_matches_the_transformers_reference() {
    let dir = fixture("olmoe");
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(PathBuf::from(&dir).join("reference.json")).unwrap())
            .unwrap();
    let ids: Vec<u64> = reference["input_ids"][2]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let ids_arg = ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    let out = bin()
        .args(["forward", "--model", &dir, "--ids", &ids_arg, "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tensors = candle_core::safetensors::load(
        PathBuf::from(&dir).join("reference.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let expected = tensors["logits.2"].to_vec2::<f32>().unwrap();
    let got: Vec<Vec<f64>> = serde_json::from_value(json["logits"].clone()).unwrap();
    assert_eq!(got.len(), ids.len());
    let worst = got
        .iter()
        .flatten()
        .zip(expected.iter().flatten())
        .map(|(a, b)| (*a as f32 - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-4, "max |logit diff| {worst}");
    let routing: Vec<Vec<Vec<i64>>> = serde_json::from_value(json["routing"].clone()).unwrap();
    assert_eq!(routing, tensors["routing.2"].to_vec3::<i64>().unwrap());
}

#[test]
fn forward_with_text_uses_the_tokenizer() {
    let out = bin()
        .args([
            "forward",
            "--model",
            &fixture("llama"),
            "--prompt",
            "Hello world",
            "--json",
            "--last",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["ids"], serde_json::json!([471, 344, 378]));
    assert_eq!(json["logits"].as_array().unwrap().len(), 1);
}

#[test]
fn bad_input_fails_with_a_named_problem() {
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "forward".into(),
                "--model".into(),
                fixture("llama"),
                "--ids".into(),
                "1,x".into(),
            ],
            "--ids",
        ),
        (
            vec![
                "forward".into(),
                "--model".into(),
                fixture("llama"),
                "--ids".into(),
                "99999".into(),
            ],
            "token id 99999",
        ),
        (
            vec!["forward".into(), "--model".into(), fixture("llama")],
            "--prompt TEXT or --ids",
        ),
        (
            vec![
                "forward".into(),
                "--model".into(),
                fixture("llama"),
                "--ids".into(),
                "1".into(),
                "--dtype".into(),
                "f8".into(),
            ],
            "--dtype",
        ),
        (
            vec![
                "forward".into(),
                "--model".into(),
                "/nonexistent/dir/x/y".into(),
                "--ids".into(),
                "1".into(),
            ],
            "no such directory",
        ),
        (
            vec!["inspect".into(), fixture("does-not-exist")],
            "does-not-exist",
        ),
    ];
    for (args, needle) in cases {
        let out = bin().args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(
            stderr.contains(needle),
            "{args:?}: stderr should mention {needle:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} wrote partial output");
    }
}

/// With `RUST_BACKTRACE=1` set, as a user debugging a failure would, bad input still
/// ends with one `error: ...` line naming the problem and exit status 1: no backtrace
/// frames from inside candle (which captures one into every error it makes when the
/// variable is set).
#[test]
fn errors_show_no_backtrace_with_rust_backtrace_set() {
    let tmp = tempfile::tempdir().unwrap();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // A GGUF file cut inside its header, a zeroed one, a truncated safetensors file.
    let gguf = std::fs::read(root.join("models/tiny-gguf/tiny-q.gguf")).unwrap();
    let cut_gguf = tmp.path().join("cut.gguf");
    std::fs::write(&cut_gguf, &gguf[..100]).unwrap();
    let zero_gguf = tmp.path().join("zero.gguf");
    std::fs::write(&zero_gguf, vec![0u8; 4096]).unwrap();
    let cut_dir = tmp.path().join("cut-safetensors");
    std::fs::create_dir(&cut_dir).unwrap();
    std::fs::copy(
        root.join("models/tiny/llama/config.json"),
        cut_dir.join("config.json"),
    )
    .unwrap();
    let weights = std::fs::read(root.join("models/tiny/llama/model.safetensors")).unwrap();
    std::fs::write(cut_dir.join("model.safetensors"), &weights[..5000]).unwrap();
    let s = |p: &std::path::Path| p.display().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "forward".into(),
                "--model".into(),
                "/nonexistent".into(),
                "--ids".into(),
                "1".into(),
            ],
            "/nonexistent",
        ),
        (vec!["inspect".into(), s(&cut_gguf)], "does not parse"),
        (vec!["inspect".into(), s(&zero_gguf)], "unknown magic"),
        (
            vec![
                "forward".into(),
                "--model".into(),
                s(&zero_gguf),
                "--ids".into(),
                "1".into(),
            ],
            "unknown magic",
        ),
        (
            vec![
                "forward".into(),
                "--model".into(),
                s(&cut_dir),
                "--ids".into(),
                "1".into(),
            ],
            "model.safetensors",
        ),
    ];
    for (args, needle) in cases {
        let out = bin().args(&args).env("RUST_BACKTRACE", "1").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line expected, got:\n{stderr}");
        assert!(lines[0].starts_with("error: "), "{args:?}: {stderr}");
        assert!(
            lines[0].contains(needle),
            "{args:?}: should mention {needle:?}: {stderr}"
        );
        for frame in ["candle_core::", "backtrace", " at /", "   0: "] {
            assert!(
                !stderr.contains(frame),
                "{args:?}: backtrace text {frame:?} in:\n{stderr}"
            );
        }
    }
}

/// A hub id resolves from the local Hugging Face cache, offline.
#[test]
fn hub_ids_load_from_the_local_cache_offline() {
    let home = tempfile::tempdir().unwrap();
    let repo = home.path().join("hub/models--tiny-org--tiny-mixtral");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let snapshot = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    for entry in std::fs::read_dir(fixture("mixtral")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), snapshot.join(entry.file_name())).unwrap();
    }
    let run = |spec: &str| {
        bin()
            .args(["forward", "--model", spec, "--ids", "1,2,3", "--json", "--last"])
            .env("HF_HOME", home.path())
            .env("HF_HUB_OFFLINE", "1")
            .env_remove("HF_HUB_CACHE")
            .output()
            .unwrap()
    };
    let out = run("tiny-org/tiny-mixtral");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["routing"].as_array().unwrap().len(), 2);

    // Offline and not cached: a clear error naming the cache, at once.
    let start = std::time::Instant::now();
    let out = run("tiny-org/not-cached");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("HF_HUB_OFFLINE") && stderr.contains(&home.path().display().to_string()),
        "{stderr}"
    );
    assert!(start.elapsed().as_secs() < 30);
}

/// `bench --random-config` measures a model of a config's shapes without its weights, on
/// either MoE path; a bad `--moe-path` is a usage error naming the flag.
#[test]
fn bench_runs_a_random_weight_model_of_a_config() {
    let config = format!("{}/config.json", fixture("qwen2_moe"));
    let bench = |path: &str, extra: &[&str]| -> serde_json::Value {
        let out = bin()
            .args([
                "bench",
                "--random-config",
                &config,
                "--moe-path",
                path,
                "--populations",
                "2",
            ])
            .args([
                "--prompt-tokens",
                "5",
                "--new-tokens",
                "3",
                "--repeats",
                "1",
                "--json",
            ])
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    for path in ["host", "device"] {
        let json = bench(path, &[]);
        assert_eq!(json["population"], 2);
        assert!(json["prefill_tokens_per_s"].as_f64().unwrap() > 0.0, "{json}");
        assert!(json["decode_tokens_per_s"].as_f64().unwrap() > 0.0, "{json}");
        let json = bench(path, &["--round", "--shared-only", "--layer", "1"]);
        assert!(json["seconds_shared_batched"].as_f64().unwrap() > 0.0, "{json}");
        assert!(
            json.get("seconds_one_by_one").is_none(),
            "--shared-only times one way: {json}"
        );
    }
    let out = bin()
        .args(["bench", "--random-config", &config, "--moe-path", "gpu"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--moe-path"));
}

/// `--dtype q8_0` / `q4_k` quantise the routed experts; the bench reports their format,
/// storage and the peak resident memory.
#[test]
fn bench_reports_quantised_experts_and_memory() {
    let bench = |dtype: &str| -> serde_json::Value {
        let out = bin()
            .args([
                "bench",
                "--model",
                &fixture("olmoe"),
                "--dtype",
                dtype,
                "--populations",
                "2",
            ])
            .args([
                "--prompt-tokens",
                "5",
                "--new-tokens",
                "2",
                "--repeats",
                "1",
                "--json",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let dense = bench("f32");
    assert_eq!(dense["experts"], "dense");
    // The fixture: 2 MoE layers of 8 experts, [gate; up] 64 x 64 and down 64 x 32, f32.
    assert_eq!(
        dense["expert_mib"].as_f64().unwrap(),
        (2 * 8 * 3 * 64 * 32 * 4) as f64 / 1048576.0
    );
    assert!(dense["peak_rss_mib"].as_f64().unwrap() > 0.0, "{dense}");
    for (dtype, bytes_per_32) in [("q8_0", 34), ("q4_k", 18)] {
        let json = bench(dtype);
        assert_eq!(json["experts"], dtype);
        // Inner sizes padded to 256 for candle's fast quantised product.
        let padded_values = 2 * 8 * (64 * 256 + 64 * 256);
        let want = (padded_values / 32 * bytes_per_32) as f64 / 1048576.0;
        assert_eq!(json["expert_mib"].as_f64().unwrap(), want, "{json}");
        assert!(json["decode_tokens_per_s"].as_f64().unwrap() > 0.0, "{json}");
    }
    let out = bin()
        .args([
            "bench",
            "--model",
            &fixture("olmoe"),
            "--dtype",
            "q4_k",
            "--moe-path",
            "device",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("host path"));
}
