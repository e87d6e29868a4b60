//! Diversity metrics, the degeneracy test and diverse selection on hand-made cases.

use latentevo_reward::{
    cosine, degeneracy, distinct_ideas, distinct_n, mean_pairwise_distance, select_diverse, vendi_score,
    Degenerate,
};

fn unit(angle_deg: f64) -> Vec<f32> {
    let a = angle_deg.to_radians();
    vec![a.cos() as f32, a.sin() as f32]
}

#[test]
fn cosine_and_mean_pairwise_distance() {
    assert!((cosine(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-12);
    assert!((cosine(&[1.0, 0.0], &[-1.0, 0.0]) + 1.0).abs() < 1e-12);
    assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
    assert!(cosine(&[1.0], &[1.0, 0.0]).is_nan());
    // Three vectors at 0, 90, 180 degrees: distances 1, 2, 1 => mean 4/3.
    let e = vec![unit(0.0), unit(90.0), unit(180.0)];
    assert!((mean_pairwise_distance(&e) - 4.0 / 3.0).abs() < 1e-6);
    assert_eq!(mean_pairwise_distance(&e[..1]), 0.0);
    assert_eq!(mean_pairwise_distance(&[]), 0.0);
}

#[test]
fn vendi_score_counts_effective_items() {
    assert_eq!(vendi_score(&[]), 0.0);
    assert_eq!(vendi_score(&[unit(10.0)]), 1.0);
    // n identical => 1; n orthogonal => n.
    let same = vec![unit(30.0); 5];
    assert!((vendi_score(&same) - 1.0).abs() < 1e-6);
    let eye: Vec<Vec<f32>> = (0..4)
        .map(|i| (0..4).map(|j| if i == j { 1.0 } else { 0.0 }).collect())
        .collect();
    assert!((vendi_score(&eye) - 4.0).abs() < 1e-9);
    // Two identical pairs of orthogonal vectors => 2.
    let pairs = vec![eye[0].clone(), eye[0].clone(), eye[1].clone(), eye[1].clone()];
    assert!((vendi_score(&pairs) - 2.0).abs() < 1e-9);
    // Two vectors with cosine c: eigenvalues (1 +- c) / 2.
    let c = 0.6f64;
    let two = vec![unit(0.0), unit(c.acos().to_degrees())];
    let (l1, l2) = ((1.0 + c) / 2.0, (1.0 - c) / 2.0);
    let want = (-(l1 * l1.ln() + l2 * l2.ln())).exp();
    assert!((vendi_score(&two) - want).abs() < 1e-6, "{}", vendi_score(&two));
}

#[test]
fn distinct_n_over_a_set() {
    // unigrams: the cat sat the cat ran => 4 unique of 6
    let d1 = distinct_n(&["The cat sat", "the CAT ran"], 1);
    assert!((d1 - 4.0 / 6.0).abs() < 1e-12);
    // bigrams: [the cat, cat sat, the cat, cat ran] => 3 of 4
    assert!((distinct_n(&["The cat sat", "the CAT ran"], 2) - 0.75).abs() < 1e-12);
    assert_eq!(distinct_n(&["one"], 2), 0.0);
    assert_eq!(distinct_n(&[], 1), 0.0);
    assert_eq!(distinct_n(&["a b"], 0), 0.0);
}

#[test]
fn distinct_ideas_greedy_partition() {
    // 0 and 10 degrees (cos 0.985) are one idea; 60 (cos 0.5 to 0) another; 65 joins 60.
    let e = vec![unit(0.0), unit(60.0), unit(10.0), unit(65.0), unit(180.0)];
    assert_eq!(distinct_ideas(&e, 0.85), 3);
    assert_eq!(distinct_ideas(&e, 0.9999), 5);
    assert_eq!(distinct_ideas(&e, -2.0), 1);
    assert_eq!(distinct_ideas(&[], 0.85), 0);
    // Compared with the group's first member only: 0, 25, 50 at cos(25) = 0.906.
    let chain = vec![unit(0.0), unit(25.0), unit(50.0)];
    assert_eq!(distinct_ideas(&chain, 0.85), 2);
}

#[test]
fn degeneracy_reasons() {
    assert_eq!(degeneracy(""), Some(Degenerate::Empty));
    assert_eq!(degeneracy(" \n\t "), Some(Degenerate::Empty));
    assert_eq!(degeneracy("!!! ??? ..."), Some(Degenerate::Garbage));
    assert_eq!(
        degeneracy("ab\u{0}\u{1}\u{2}\u{3}\u{4}\u{5}"),
        Some(Degenerate::Garbage)
    );
    assert_eq!(
        degeneracy("I think or or or or so"),
        Some(Degenerate::Loop {
            unit: "or".into(),
            times: 4
        })
    );
    assert_eq!(
        degeneracy("and then the end. The end. the end, the END!"),
        Some(Degenerate::Loop {
            unit: "the end".into(),
            times: 4
        })
    );
    assert_eq!(
        degeneracy("it said ogogogogog"),
        Some(Degenerate::Loop {
            unit: "og".into(),
            times: 5
        })
    );
    match degeneracy("a brick a wall a brick a wall a brick a door a brick") {
        Some(Degenerate::Repetitive { unique_ratio }) => {
            assert!((unique_ratio - 4.0 / 14.0).abs() < 1e-12)
        }
        other => panic!("{other:?}"),
    }
    // Fine texts.
    for t in [
        "1. A brick can be a doorstop. 2. A brick can be a bookend. 3. A heat store.",
        "Hmmm, maybe.",
        "42",
        "東京タワーは赤い",
        "Mississippi 1000000000",
    ] {
        assert_eq!(degeneracy(t), None, "{t}");
    }
    assert_eq!(degeneracy("or or or or").unwrap().to_string(), "loop (`or` x4)");
    assert!(Degenerate::Repetitive { unique_ratio: 0.25 }
        .to_string()
        .contains("0.25"));
}

#[test]
fn select_skips_duplicates_and_non_finite() {
    let rewards = [0.9, 0.85, f64::NAN, 0.2, 0.5];
    let e = vec![
        unit(0.0),
        unit(5.0), // duplicate of 0
        unit(90.0),
        unit(180.0),
        unit(100.0),
    ];
    // lambda = 1: best-first with dedup => 0 (0.9), skip 1, 4 (0.5), 3 (0.2); 2 is NaN.
    assert_eq!(select_diverse(&rewards, &e, 10, 0.85, 1.0), vec![0, 4, 3]);
    assert_eq!(select_diverse(&rewards, &e, 2, 0.85, 1.0), vec![0, 4]);
    // Without dedup (threshold above 1) the duplicate is second-best.
    assert_eq!(select_diverse(&rewards, &e, 2, 1.01, 1.0), vec![0, 1]);
    // lambda = 0.5: after 0, item 3 (cos -1, norm reward 0) scores 0.5*0 + 0.5*1 = 0.5,
    // item 4 (cos -0.17, norm reward 3/7) scores 0.214 + 0.087 = 0.30 => 3 first.
    assert_eq!(select_diverse(&rewards, &e, 3, 0.85, 0.5), vec![0, 3, 4]);
    assert!(select_diverse(&rewards, &e, 0, 0.85, 0.5).is_empty());
    assert!(select_diverse(&[], &[], 3, 0.85, 0.5).is_empty());
}

#[test]
fn select_ties_go_to_the_lowest_index() {
    let rewards = [1.0, 1.0, 1.0];
    let e = vec![unit(0.0), unit(90.0), unit(180.0)];
    assert_eq!(select_diverse(&rewards, &e, 3, 0.85, 1.0), vec![0, 1, 2]);
    // Same rewards, diversity matters: after 0, item 2 (cos -1) beats item 1 (cos 0).
    assert_eq!(select_diverse(&rewards, &e, 3, 0.85, 0.5), vec![0, 2, 1]);
    // Deterministic: the same call gives the same answer.
    assert_eq!(
        select_diverse(&rewards, &e, 3, 0.85, 0.5),
        select_diverse(&rewards, &e, 3, 0.85, 0.5)
    );
}
