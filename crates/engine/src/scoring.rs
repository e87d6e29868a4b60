//! Scoring one round: the model-based reward inputs (fluency, KL, pointwise mutual
//! information, the judge), embeddings, and the reward itself.

use candle_core::{DType, D};
use latentevo_model::{Hooks, LoadedModel, LogitsMode, ShadowedOutput, TokenBatch};
use latentevo_reward::{score_batch, Candidate as RewardInput, Context, Embedder, RewardSpec};

use crate::error::{EngineError, Result};
use crate::result::Candidate;
use crate::search::content_tokens;

/// What every round of a search shares.
pub(crate) struct RoundInputs<'a> {
    pub engine_model: &'a LoadedModel,
    pub embedder: &'a Embedder,
    pub spec: &'a RewardSpec,
    pub prompt: &'a str,
    pub reference_text: &'a str,
    pub reference_embedding: Option<&'a [f32]>,
    /// The context that stands for "no prompt" (pointwise mutual information).
    pub null_context: &'a [u32],
    /// The prompt's tokens (chat template included): answer tokens that repeat one of its
    /// bigrams are left out of the pointwise mutual information.
    pub prompt_ids: &'a [u32],
    /// Candidates with relevance below this are masked as off-topic.
    pub min_relevance: Option<f64>,
    /// Candidates of fewer words are masked as too short.
    pub min_words: usize,
    pub stop: &'a [u32],
}

/// A scored round: candidates (advantage and guardrail not yet applied), their
/// embeddings, and messages for the user.
pub(crate) struct ScoredRound {
    pub candidates: Vec<Candidate>,
    pub embeddings: Vec<Vec<f32>>,
    pub warnings: Vec<String>,
}

fn mean(values: &[f32]) -> f64 {
    if values.is_empty() {
        f64::NAN
    } else {
        values.iter().map(|&v| v as f64).sum::<f64>() / values.len() as f64
    }
}

/// Scores the continuations of one round.
pub(crate) fn score_round(
    inputs: &RoundInputs,
    round: usize,
    latents: &[Vec<f64>],
    out: &ShadowedOutput,
) -> Result<ScoredRound> {
    let model = &inputs.engine_model.model;
    let needs = inputs.spec.needs();
    let texts: Vec<String> = out
        .sequences
        .iter()
        .map(|s| s.text.clone().unwrap_or_default())
        .collect();
    let content: Vec<Vec<u32>> = out
        .sequences
        .iter()
        .map(|s| content_tokens(&s.tokens, inputs.stop))
        .collect();
    let mut fluency = Vec::with_capacity(texts.len());
    let mut kl = Vec::with_capacity(texts.len());
    let mut k3 = Vec::with_capacity(texts.len());
    for (i, tokens) in content.iter().enumerate() {
        let n = tokens.len();
        let base = &out.base_logprobs[i][..n];
        let own = &out.sequences[i].logprobs[..n];
        fluency.push(mean(base));
        kl.push(mean(&out.kl[i][..n]));
        // k3 = r - ln r - 1 with r = p_base / p_perturbed at the chosen token.
        let k3s: Vec<f32> = base
            .iter()
            .zip(own)
            .map(|(b, o)| {
                let log_r = (b - o) as f64;
                (log_r.exp() - log_r - 1.0) as f32
            })
            .collect();
        k3.push(mean(&k3s));
    }
    let text_refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let embeddings = inputs.embedder.embed(&text_refs)?;
    let relevance = if needs.relevance {
        let unconditional = model.score_continuations(inputs.null_context, &content, &Hooks::default())?;
        let bigrams = token_bigrams(inputs.prompt_ids);
        Some(
            content
                .iter()
                .enumerate()
                .map(|(i, tokens)| {
                    let base = &out.base_logprobs[i][..tokens.len()];
                    pointwise_mutual_information(tokens, base, &unconditional[i], inputs.prompt_ids, &bigrams)
                })
                .collect::<Vec<f64>>(),
        )
    } else {
        None
    };
    let judge = if needs.judge {
        Some(judge_scores(inputs.engine_model, inputs.prompt, &texts)?)
    } else {
        None
    };
    let reward_inputs: Vec<RewardInput> = (0..texts.len())
        .map(|i| RewardInput {
            text: &texts[i],
            fluency: fluency[i],
            relevance: relevance.as_ref().map(|r| r[i]),
            judge: judge.as_ref().map(|j| j[i]),
            embedding: Some(&embeddings[i]),
        })
        .collect();
    let context = Context {
        prompt: inputs.prompt,
        reference_text: inputs.reference_text,
        reference_embedding: inputs.reference_embedding,
        embedder: Some(inputs.embedder),
    };
    let scores = score_batch(inputs.spec, &context, &reward_inputs)?;
    let candidates = scores
        .scores
        .into_iter()
        .enumerate()
        .map(|(i, s)| Candidate {
            round,
            index: i,
            latent: latents[i].clone(),
            text: texts[i].clone(),
            tokens: out.sequences[i].tokens.len(),
            reward: s.total.is_finite().then_some(s.total),
            terms: s.terms,
            fluency: fluency[i],
            kl: kl[i],
            k3: k3[i],
            drift: out.drift.row_share(i),
            advantage: None,
            masked: s
                .masked
                .map(|m| m.to_string())
                .or_else(|| {
                    let words = texts[i].split_whitespace().count();
                    (words < inputs.min_words)
                        .then(|| format!("too short: {words} words, fewer than {}", inputs.min_words))
                })
                .or_else(|| {
                    let r = relevance.as_ref()?[i];
                    let min = inputs.min_relevance?;
                    (r < min)
                        .then(|| format!("off-topic: relevance (PMI with the prompt) {r:.3} below {min}"))
                }),
        })
        .collect();
    Ok(ScoredRound {
        candidates,
        embeddings,
        warnings: scores.reports,
    })
}

/// The bigrams of a token sequence.
fn token_bigrams(tokens: &[u32]) -> std::collections::HashSet<(u32, u32)> {
    tokens.windows(2).map(|w| (w[0], w[1])).collect()
}

/// Mean over the answer's tokens of `log p(token | prompt, answer so far) - log p(token |
/// no prompt, answer so far)`, leaving out every token that continues a bigram of the
/// prompt (with the prompt's last token before the answer's first): copying the request
/// is likely under the prompt and unlikely without it, so it would otherwise score as
/// the most relevant answer. 0 when every token is a copy (nothing new was said).
fn pointwise_mutual_information(
    tokens: &[u32],
    with_prompt: &[f32],
    without_prompt: &[f32],
    prompt: &[u32],
    prompt_bigrams: &std::collections::HashSet<(u32, u32)>,
) -> f64 {
    let mut previous = prompt.last().copied();
    let (mut sum, mut count) = (0.0, 0usize);
    for (j, &token) in tokens.iter().enumerate() {
        let copied = previous.is_some_and(|p| prompt_bigrams.contains(&(p, token)));
        if !copied {
            sum += with_prompt[j] as f64 - without_prompt[j] as f64;
            count += 1;
        }
        previous = Some(token);
    }
    if count == 0 {
        0.0
    } else {
        sum / count as f64
    }
}

/// The judge: the model rates each answer from 1 to 9; the score is the expected rating
/// under its next-token distribution restricted to the nine digits, mapped to [0, 1].
pub(crate) fn judge_scores(loaded: &LoadedModel, prompt: &str, answers: &[String]) -> Result<Vec<f64>> {
    let model = &loaded.model;
    let digits: Vec<u32> = (1..=9)
        .map(|d| {
            let ids = loaded.encode(&d.to_string())?;
            match ids.as_slice() {
                [id] => Ok(*id),
                _ => Err(EngineError::Unsupported(format!(
                    "the judge needs each digit to be one token, and `{d}` encodes as {ids:?}"
                ))),
            }
        })
        .collect::<Result<_>>()?;
    let prompts: Vec<Vec<u32>> = answers
        .iter()
        .map(|answer| {
            let question = format!(
                "Here is a request and an answer to it.\n\nRequest: {prompt}\n\nAnswer: {answer}\n\n\
                 Rate the answer from 1 (useless, off-topic or repetitive) to 9 (excellent: on-topic, \
                 original and clear). Reply with the digit only."
            );
            loaded.encode(&loaded.chat_prompt(&question)?)
        })
        .collect::<latentevo_model::Result<_>>()?;
    let mut scores = Vec::with_capacity(answers.len());
    // Small batches keep the padded prompts' memory bounded.
    for chunk in prompts.chunks(8) {
        let out = model.forward(
            &TokenBatch::left_padded(chunk, 0),
            &mut model.new_cache(),
            &Hooks::default(),
            LogitsMode::Last,
        )?;
        let logits = out.logits.expect("LogitsMode::Last returns logits");
        let index = candle_core::Tensor::new(digits.as_slice(), logits.device())?;
        let probs =
            candle_nn::ops::softmax(&logits.index_select(&index, 1)?.to_dtype(DType::F32)?, D::Minus1)?;
        for row in probs.to_vec2::<f32>()? {
            let expected: f64 = row
                .iter()
                .enumerate()
                .map(|(k, &p)| (k + 1) as f64 * p as f64)
                .sum();
            scores.push((expected - 1.0) / 8.0);
        }
    }
    Ok(scores)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pmi_leaves_out_tokens_copied_from_the_prompt() {
        let prompt = [1u32, 2, 3, 4];
        let bigrams = token_bigrams(&prompt);
        // Answer 9, 2, 3, 7: "2 3" repeats a prompt bigram, so only 9, 2 and 7 count
        // (2 follows 9, which is not a prompt bigram).
        let tokens = [9u32, 2, 3, 7];
        let with = [-1.0f32, -2.0, -0.1, -3.0];
        let without = [-2.0f32, -2.5, -5.0, -3.5];
        let got = pointwise_mutual_information(&tokens, &with, &without, &prompt, &bigrams);
        assert!((got - (1.0 + 0.5 + 0.5) / 3.0).abs() < 1e-12, "{got}");
        // The prompt's last token and the answer's first form a bigram too.
        let echo = [1u32, 2, 3, 4];
        let got = pointwise_mutual_information(&echo, &with, &without, &prompt, &bigrams);
        assert!(
            (got - 1.0).abs() < 1e-12,
            "only the first token (4 -> 1 is new) counts: {got}"
        );
        let all_copied = [4u32, 5];
        let prompt2 = [5u32, 4, 5];
        let got = pointwise_mutual_information(
            &all_copied,
            &[-1.0, -1.0],
            &[-9.0, -9.0],
            &prompt2,
            &token_bigrams(&prompt2),
        );
        assert_eq!(got, 0.0);
    }
}
