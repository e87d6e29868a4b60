//! End-to-end searches on a tiny fixture model (seconds each).

use std::ops::ControlFlow;
use std::path::PathBuf;

use latentevo_engine::calibrate::TOLERANCE;
use latentevo_engine::{Basis, Engine, Inject, RoutingPolicy, Scale, StrategyKind};
use latentevo_reward::{Embedder, RewardSpec};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

fn engine(family: &str) -> Engine {
    let model = latentevo_model::load(
        repo(&format!("models/tiny/{family}")).to_str().unwrap(),
        &Default::default(),
    )
    .unwrap();
    let embedder = Embedder::load(&repo("models/tiny/minilm"), &candle_core::Device::Cpu).unwrap();
    Engine::new(model, embedder).unwrap()
}

const PROMPT: &str = "Give me three unusual uses for a brick.";

#[test]
fn the_same_seed_gives_the_same_result() {
    let engine = engine("mixtral");
    let run = |seed| {
        engine
            .search(PROMPT)
            .population(6)
            .rounds(3)
            .max_new_tokens(8)
            .seed(seed)
            .run()
            .unwrap()
    };
    let (a, b, c) = (run(7), run(7), run(8));
    let key = |r: &latentevo_engine::SearchResult| {
        serde_json::to_string(&(
            &r.candidates,
            &r.ideas.iter().map(|i| (&i.text, i.reward)).collect::<Vec<_>>(),
        ))
        .unwrap()
    };
    assert_eq!(key(&a), key(&b), "same seed, different result");
    assert_ne!(key(&a), key(&c), "another seed should draw other latents");
    assert_eq!(a.candidates.len(), 18);
    assert!(!a.ideas.is_empty() && a.ideas.len() <= 6);
    assert_eq!(a.rounds.len(), 3);
}

#[test]
fn every_strategy_basis_and_routing_runs() {
    let engine = engine("qwen2_moe");
    for strategy in [
        StrategyKind::DiffEvo,
        StrategyKind::CmaEs,
        StrategyKind::OpenEs,
        StrategyKind::Random,
    ] {
        let r = engine
            .search(PROMPT)
            .population(4)
            .rounds(2)
            .max_new_tokens(6)
            .strategy(strategy)
            .run()
            .unwrap();
        assert_eq!(r.candidates.len(), 8, "{strategy}");
    }
    for basis in [Basis::Random, Basis::Pca, Basis::Experts] {
        for routing in [
            RoutingPolicy::Lock,
            RoutingPolicy::LockWeights,
            RoutingPolicy::Free,
        ] {
            let r = engine
                .search(PROMPT)
                .population(3)
                .rounds(1)
                .max_new_tokens(6)
                .basis(basis)
                .routing(routing)
                .inject(Inject::All)
                .layer(2)
                .run()
                .unwrap();
            assert_eq!(r.candidates.len(), 3);
            if routing == RoutingPolicy::Free {
                assert_eq!(r.rounds[0].drift, 0.0, "nothing is locked under free routing");
            }
        }
    }
}

#[test]
fn the_calibrated_scale_hits_its_kl_target() {
    let engine = engine("olmoe");
    for target in [0.02, 0.2] {
        let r = engine
            .search(PROMPT)
            .population(2)
            .rounds(1)
            .max_new_tokens(8)
            .scale(Scale::KlTarget(target))
            .run()
            .unwrap();
        let c = &r.calibration;
        assert!(
            (c.achieved_kl / target - 1.0).abs() <= TOLERANCE,
            "target {target}: achieved {} at s = {} after {} passes",
            c.achieved_kl,
            c.scale,
            c.evaluations
        );
        assert!(c.evaluations > 0 && !c.cached);
    }
    // The same prompt and setting again: the scale comes from the cache.
    let again = engine
        .search(PROMPT)
        .population(2)
        .rounds(1)
        .max_new_tokens(8)
        .scale(Scale::KlTarget(0.2))
        .run()
        .unwrap();
    assert!(again.calibration.cached && again.calibration.evaluations == 0);
}

#[test]
fn a_failing_reward_command_is_reported_and_masked_not_fatal() {
    let engine = engine("mixtral");
    let spec: RewardSpec = "novelty + command('echo oops >&2; exit 3')".parse().unwrap();
    let r = engine
        .search(PROMPT)
        .population(4)
        .rounds(2)
        .max_new_tokens(6)
        .reward(spec)
        .run()
        .unwrap();
    assert_eq!(r.candidates.len(), 8);
    assert!(
        r.candidates.iter().all(|c| c.masked.is_some()),
        "every candidate should be masked"
    );
    assert!(r.ideas.is_empty());
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("exit") || w.contains("status")),
        "{:?}",
        r.warnings
    );
}

#[test]
fn the_population_climbs_a_synthetic_reward() {
    // Reward: how many times the letter `e` occurs in the continuation (an external
    // command, so the optimum is known and needs no model); the JSON keys add a constant.
    let engine = engine("mixtral");
    let spec: RewardSpec =
        "command('while IFS= read -r line; do printf %s \"$line\" | tr -cd e | wc -c; done')"
            .parse()
            .unwrap();
    let mut means = Vec::new();
    let r = engine
        .search(PROMPT)
        .population(16)
        .rounds(5)
        .max_new_tokens(12)
        .scale(Scale::Fixed(2.0))
        .reward(spec)
        .on_round(|report| {
            means.push(report.stats.mean_reward);
            ControlFlow::Continue(())
        })
        .run()
        .unwrap();
    assert_eq!(r.rounds.len(), 5);
    eprintln!("mean reward per round: {means:?}");
    assert!(
        means[4] > means[0],
        "mean reward should rise from the first to the last round: {means:?}"
    );
}

#[test]
fn the_callback_can_stop_the_search_early() {
    let engine = engine("mixtral");
    let r = engine
        .search(PROMPT)
        .population(4)
        .rounds(5)
        .max_new_tokens(6)
        .on_round(|report| {
            if report.stats.round == 1 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .run()
        .unwrap();
    assert!(r.stopped_early);
    assert_eq!(r.rounds.len(), 2);
    assert_eq!(r.candidates.len(), 8);
}

#[test]
fn bad_settings_are_typed_errors_naming_the_flag() {
    let engine = engine("mixtral");
    let err = engine.search(PROMPT).layer(9).run().unwrap_err();
    assert!(err.to_string().contains("--layer"), "{err}");
    let err = engine.search(PROMPT).population(1).run().unwrap_err();
    assert!(err.to_string().contains("--population"), "{err}");
}
