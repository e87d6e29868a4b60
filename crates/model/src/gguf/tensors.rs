//! Reading, dequantizing and renaming a GGUF file's weights into Hugging Face form.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;

use candle_core::{DType, Device, Tensor};

use super::{GgufError, GgufFile};
use crate::config::ModelConfig;
use crate::error::candle_message;

impl GgufFile {
    /// Reads, dequantizes and converts every tensor, under HF names and layout, checking
    /// each shape against `config` (see [`GgufFile::model_config`]).
    pub fn hf_tensors(
        &self,
        config: &ModelConfig,
        device: &Device,
        dtype: DType,
    ) -> Result<HashMap<String, Tensor>, GgufError> {
        let hidden = config.hidden_size;
        let inter = config.intermediate_size;
        let layers = config.num_hidden_layers;
        let heads = config.num_attention_heads;
        let kv = config.num_key_value_heads;
        let hd = config.head_dim;
        let vocab = config.vocab_size;
        let tied = config.tie_word_embeddings;

        // (gguf name, hf name, expected HF shape, un-permute with this many heads)
        let mut plan: Vec<(String, String, Vec<usize>, Option<usize>)> = vec![
            (
                "token_embd.weight".into(),
                "model.embed_tokens.weight".into(),
                vec![vocab, hidden],
                None,
            ),
            (
                "output_norm.weight".into(),
                "model.norm.weight".into(),
                vec![hidden],
                None,
            ),
        ];
        if !tied {
            plan.push((
                "output.weight".into(),
                "lm_head.weight".into(),
                vec![vocab, hidden],
                None,
            ));
        }
        for i in 0..layers {
            let g = |s: &str| format!("blk.{i}.{s}.weight");
            let h = |s: &str| format!("model.layers.{i}.{s}.weight");
            plan.extend([
                (g("attn_norm"), h("input_layernorm"), vec![hidden], None),
                (g("ffn_norm"), h("post_attention_layernorm"), vec![hidden], None),
                (
                    g("attn_q"),
                    h("self_attn.q_proj"),
                    vec![heads * hd, hidden],
                    Some(heads),
                ),
                (
                    g("attn_k"),
                    h("self_attn.k_proj"),
                    vec![kv * hd, hidden],
                    Some(kv),
                ),
                (g("attn_v"), h("self_attn.v_proj"), vec![kv * hd, hidden], None),
                (
                    g("attn_output"),
                    h("self_attn.o_proj"),
                    vec![hidden, heads * hd],
                    None,
                ),
                (g("ffn_gate"), h("mlp.gate_proj"), vec![inter, hidden], None),
                (g("ffn_up"), h("mlp.up_proj"), vec![inter, hidden], None),
                (g("ffn_down"), h("mlp.down_proj"), vec![hidden, inter], None),
            ]);
        }

        let file = File::open(&self.path).map_err(|source| GgufError::Io {
            path: self.path.clone(),
            source,
        })?;
        let mut reader = BufReader::new(file);
        let mut out = HashMap::with_capacity(plan.len());
        for (gname, hname, expected, permute_heads) in plan {
            let info = self
                .content
                .tensor_infos
                .get(&gname)
                .ok_or_else(|| GgufError::MissingTensor {
                    path: self.path.clone(),
                    tensor: gname.clone(),
                })?;
            let found = info.shape.dims().to_vec();
            if found != expected {
                return Err(GgufError::TensorShape {
                    path: self.path.clone(),
                    tensor: gname,
                    expected,
                    found,
                });
            }
            let terr = |e: candle_core::Error| GgufError::Tensor {
                path: self.path.clone(),
                tensor: gname.clone(),
                message: candle_message(&e),
            };
            let q = info
                .read(&mut reader, self.content.tensor_data_offset, &Device::Cpu)
                .map_err(terr)?;
            let mut t = q.dequantize(&Device::Cpu).map_err(terr)?;
            if let Some(n) = permute_heads {
                t = unpermute_rows(&t, n).map_err(terr)?;
            }
            let t = t.to_dtype(dtype).and_then(|t| t.to_device(device));
            out.insert(hname, t.map_err(terr)?);
        }
        Ok(out)
    }
}

/// Undoes llama.cpp's rope permutation of q/k rows: GGUF stores rows of each head as
/// `(dim/2, 2)` where HF has `(2, dim/2)`.
pub(super) fn unpermute_rows(t: &Tensor, n_head: usize) -> candle_core::Result<Tensor> {
    let (rows, cols) = t.dims2()?;
    if n_head == 0 || rows % (2 * n_head) != 0 {
        candle_core::bail!("{rows} rows cannot be split into {n_head} heads of pairs");
    }
    let half = rows / n_head / 2;
    t.reshape((n_head, half, 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))
}
