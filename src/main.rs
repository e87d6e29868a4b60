//! `latentevo`: search the hidden states of a Mixture-of-Experts language model for
//! diverse, high-reward ideas. This binary is a thin layer over the workspace crates.

mod commands;

use clap::{Parser, Subcommand};

/// Search a Mixture-of-Experts language model's hidden states for diverse ideas.
#[derive(Debug, Parser)]
#[command(name = "latentevo", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Search the model's hidden states for diverse, high-reward ideas for a prompt.
    Ideas(Box<commands::ideas::IdeasArgs>),
    /// Evaluate the search against sampling baselines over prompt sets (and merge shards,
    /// write summaries).
    Eval(Box<commands::eval::EvalArgs>),
    /// Describe a model: family, layers, experts, top-k, parameters, vocabulary.
    Inspect(commands::inspect::InspectArgs),
    /// Run one forward pass and print logits and expert routing.
    Forward(commands::forward::ForwardArgs),
    /// Turn a dense checkpoint into a Mixture-of-Experts checkpoint.
    Upcycle(commands::upcycle::UpcycleArgs),
    /// Measure forward throughput at several population sizes.
    Bench(commands::bench::BenchArgs),
}

fn main() {
    // Errors print their message only. candle captures a backtrace into every error when
    // RUST_BACKTRACE (or RUST_LIB_BACKTRACE) is set and prints it as part of the message,
    // so `error: ...` lines would carry frames from inside candle. RUST_LIB_BACKTRACE=0
    // stops errors from capturing backtraces while panics still honour RUST_BACKTRACE;
    // a user who sets RUST_LIB_BACKTRACE themselves gets what they asked for. Set before
    // any thread starts and before the first backtrace is captured.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    latentevo_model::alloc::retain_freed_memory();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ideas(args) => commands::ideas::run(*args),
        Command::Eval(args) => commands::eval::run(*args),
        Command::Inspect(args) => commands::inspect::run(args),
        Command::Forward(args) => commands::forward::run(args),
        Command::Upcycle(args) => commands::upcycle::run(args),
        Command::Bench(args) => commands::bench::run(args),
    };
    if let Err(error) = result {
        eprintln!("error: {error:#}");
        let usage = error.downcast_ref::<commands::UsageError>().is_some();
        std::process::exit(if usage { 2 } else { 1 });
    }
}
