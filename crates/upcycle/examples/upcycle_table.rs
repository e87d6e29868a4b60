//! Measures dense vs upcycled variants of a dense GGUF/HF model: perplexity on a
//! held-out text, routing sensitivity, total parameters and compute per token. Prints a
//! markdown table (the one in docs/default-model.md).
//!
//! ```text
//! cargo run --release -p latentevo-upcycle --example upcycle_table -- \
//!     SmolLM2-135M-Instruct.Q4_1.gguf tests/data/kjv-ruth.txt 1024 \
//!     copies:4:2:0.02 copies:4:2:0.05 split:8:6 ...
//! ```
//! Each variant is `copies:E:K:NOISE[:ROUTER[:SEED[:MODE]]]` (ROUTER kmeans or random,
//! MODE output or weights) or `split:E:K`.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use latentevo_upcycle::measure::{measure, size_of};
use latentevo_upcycle::{
    calibrate, calibration_ids, load_dense, upcycle, Method, NoiseMode, RouterInit, UpcycleOptions,
    CALIBRATION_TEXT,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: upcycle_table MODEL TEXT TOKENS [VARIANT...]");
        std::process::exit(2);
    }
    let dense = load_dense(Path::new(&args[0]))?;
    let text = std::fs::read_to_string(&args[1])?;
    let n: usize = args[2].parse()?;
    let window = 512;
    let ids = calibration_ids(&dense, &text)?;
    let ids = &ids[..n.min(ids.len())];
    let t0 = Instant::now();
    let calib_ids = calibration_ids(&dense, CALIBRATION_TEXT)?;
    let calib = calibrate(&dense, &calib_ids, window)?;
    eprintln!(
        "calibration: {} tokens in {:.1}s",
        calib.tokens,
        t0.elapsed().as_secs_f64()
    );

    let dense_model = dense.model()?;
    let t0 = Instant::now();
    let base = measure(dense_model, ids, window, false)?;
    let dsize = size_of(&dense.tensors, dense.config.tie_word_embeddings, 1, 1);
    eprintln!("dense: {:.1}s", t0.elapsed().as_secs_f64());
    println!(
        "| variant | experts | top-k | noise | router | seed | params (M) | x dense | MACs/token (M) | x dense | ppl | x dense | KL rerouted (nats) | top-1 changed | ppl rerouted |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| dense | - | - | - | - | - | {:.1} | 1.00 | {:.1} | 1.00 | {:.3} | 1.000 | - | - | - |",
        dsize.total as f64 / 1e6,
        dsize.macs_per_token as f64 / 1e6,
        base.ppl
    );
    std::io::stdout().flush()?;
    for v in &args[3..] {
        let parts: Vec<&str> = v.split(':').collect();
        if parts.len() < 3 {
            return Err(format!("variant `{v}`: expected METHOD:E:K[...]").into());
        }
        let method: Method = parts[0].parse()?;
        let experts: usize = parts[1].parse()?;
        let top_k: usize = parts[2].parse()?;
        let noise: f64 = parts.get(3).map(|s| s.parse()).transpose()?.unwrap_or(0.0);
        let seed: u64 = parts.get(5).map(|s| s.parse()).transpose()?.unwrap_or(0);
        let noise_mode: NoiseMode = parts.get(6).copied().unwrap_or("weights").parse()?;
        let router = if parts.get(4) == Some(&"random") {
            RouterInit::Random
        } else {
            RouterInit::KMeans
        };
        let opts = UpcycleOptions {
            method,
            experts,
            top_k,
            noise,
            noise_mode,
            router,
            seed,
        };
        let t0 = Instant::now();
        let moe = upcycle(&dense, &opts, Some(&calib), |_, _| {})?;
        let model = moe.model()?;
        let m = measure(model, ids, window, true)?;
        let size = size_of(&moe.tensors, dense.config.tie_word_embeddings, experts, top_k);
        let r = m.routing.clone();
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.1} | {:.2} | {:.1} | {:.2} | {:.3} | {:.3} | {} | {} | {} |",
            method.name(),
            experts,
            top_k,
            if method == Method::Copies {
                format!("{noise} ({})", noise_mode.name())
            } else {
                "-".into()
            },
            if method == Method::Copies {
                router.name()
            } else {
                "ridge"
            },
            seed,
            size.total as f64 / 1e6,
            size.total as f64 / dsize.total as f64,
            size.macs_per_token as f64 / 1e6,
            size.macs_per_token as f64 / dsize.macs_per_token as f64,
            m.ppl,
            m.ppl / base.ppl,
            r.as_ref().map_or("-".into(), |r| format!("{:.4}", r.kl.max(0.0))),
            r.as_ref()
                .map_or("-".into(), |r| format!("{:.1}%", 100.0 * r.top1_changed)),
            r.as_ref()
                .map_or("-".into(), |r| format!("{:.3}", r.ppl_rerouted)),
        );
        std::io::stdout().flush()?;
        eprintln!("{v}: {:.1}s", t0.elapsed().as_secs_f64());
    }
    Ok(())
}
