//! What quantising the routed experts costs in quality, and what it saves: for each
//! expert format (f32, Q8_0, Q4_K; `latentevo_model::ExpertFormat`), the experts'
//! storage, the perplexity on a held-out text and the divergence of the next-token
//! distributions from the f32 model's (mean KL, share of positions whose top-1 changes).
//! Prints a markdown table (the one in docs/throughput.md).
//!
//! ```text
//! cargo run --release -p latentevo-upcycle --example expert_formats -- \
//!     ~/.cache/latentevo/smollm2-135m-instruct-moe4x2-v1 tests/data/kjv-ruth.txt 1024
//! ```

use std::path::Path;
use std::time::Instant;

use latentevo_model::{load, ExpertFormat, LoadOptions};
use latentevo_upcycle::measure::{divergence, measure};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 3 {
        eprintln!("usage: expert_formats MODEL_DIR TEXT TOKENS");
        std::process::exit(2);
    }
    let (dir, text_path) = (Path::new(&args[0]), Path::new(&args[1]));
    let tokens: usize = args[2]
        .parse()
        .map_err(|e| format!("TOKENS: expected a count, got `{}`: {e}", args[2]))?;
    let text = std::fs::read_to_string(text_path).map_err(|e| format!("{}: {e}", text_path.display()))?;
    let window = 512;
    let load_as = |experts| {
        let options = LoadOptions {
            experts,
            ..LoadOptions::default()
        };
        load(dir.to_str().ok_or("MODEL_DIR is not UTF-8")?, &options).map_err(|e| e.to_string())
    };
    let reference = load_as(ExpertFormat::Dense)?;
    let ids = reference.encode(&text)?;
    let ids = &ids[..tokens.min(ids.len())];
    println!(
        "{} tokens of {}, windows of {window}; {}",
        ids.len(),
        text_path.display(),
        dir.display()
    );
    println!("| experts | expert MiB | perplexity | x f32 | KL vs f32 (nats) | top-1 changed |");
    println!("|---|---|---|---|---|---|");
    let base = measure(&reference.model, ids, window, false)?;
    for format in [ExpertFormat::Dense, ExpertFormat::Q8_0, ExpertFormat::Q4K] {
        let t0 = Instant::now();
        let loaded = if format == ExpertFormat::Dense {
            reference.clone()
        } else {
            load_as(format)?
        };
        let m = measure(&loaded.model, ids, window, false)?;
        let d = divergence(&reference.model, &loaded.model, ids, window)?;
        println!(
            "| {} | {:.1} | {:.3} | {:.4} | {:.5} | {:.2}% |",
            if format == ExpertFormat::Dense {
                "f32"
            } else {
                format.name()
            },
            loaded.model.expert_bytes() as f64 / (1024.0 * 1024.0),
            m.ppl,
            m.ppl / base.ppl,
            d.kl,
            100.0 * d.top1_changed
        );
        eprintln!("{format}: {:.1} s", t0.elapsed().as_secs_f64());
    }
    Ok(())
}
