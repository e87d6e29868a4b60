//! The prompt sets the project ships (prompts/*.jsonl) load cleanly and fit their rewards.

use std::path::PathBuf;

use latentevo_eval::PromptSet;
use latentevo_reward::{degeneracy, Term};

fn load(name: &str) -> PromptSet {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../prompts")
        .join(name);
    PromptSet::load(&path).unwrap()
}

#[test]
fn every_shipped_set_has_25_or_more_clean_prompts() {
    for (file, name) in [
        ("ideas.jsonl", "ideas"),
        ("dat.jsonl", "dat"),
        ("aut.jsonl", "aut"),
    ] {
        let set = load(file);
        assert_eq!(set.name, name);
        assert!(set.prompts.len() >= 25, "{file}: {} prompts", set.prompts.len());
        assert!(set.problems.is_empty(), "{file}: {:?}", set.problems);
        let mut texts: Vec<&str> = set.prompts.iter().map(|p| p.prompt.as_str()).collect();
        texts.sort();
        texts.dedup();
        assert_eq!(texts.len(), set.prompts.len(), "{file}: a prompt appears twice");
    }
}

#[test]
fn dat_prompts_are_scored_by_the_dat_term_and_ask_for_scorable_lists() {
    let set = load("dat.jsonl");
    for p in &set.prompts {
        let reward = p.reward.as_ref().unwrap_or_else(|| panic!("{}: no reward", p.id));
        assert!(
            reward.terms.iter().any(|t| t.term == Term::Dat),
            "{}: {reward}",
            p.id
        );
        assert!(
            p.prompt.contains("10") && p.prompt.to_lowercase().contains("comma"),
            "{}",
            p.id
        );
    }
    // The answer the prompts ask for: ten comma-separated nouns. The degeneracy test lets
    // it through and the dat term reads all ten words.
    let answer = "river, violin, justice, tractor, honey, galaxy, sock, volcano, algebra, parrot";
    assert_eq!(degeneracy(answer), None);
    assert_eq!(latentevo_reward::scoring::dat_words(answer).len(), 10);
    // The other sets use the run's default reward.
    assert!(load("ideas.jsonl").prompts.iter().all(|p| p.reward.is_none()));
    assert!(load("aut.jsonl").prompts.iter().all(|p| p.reward.is_none()));
}
