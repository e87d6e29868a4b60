//! Sharing a prompt's pass through the lower layers with a whole population.
//!
//! Layers below the perturbed one see no perturbation, so the prompt runs through them
//! once ([`Model::run_lower_layers`]); the result, a [`SharedPrompt`], is copied to the
//! population ([`SharedPrompt::repeat`]), and each use runs the remaining layers with
//! its hooks ([`Model::forward_upper_layers`], [`Model::generate_from_shared`],
//! [`Model::generate_shadowed`]).

use candle_core::Tensor;

use crate::batch::TokenBatch;
use crate::cache::KvCache;
use crate::error::{ModelError, Result};
use crate::hooks::{Hooks, Routing};
use crate::layers::Step;
use crate::model::{ForwardOutput, LogitsMode, Model};
use crate::record::Recorder;
use crate::rows::repeat_rows;

/// A prompt's pass through layers `0..layer`, computed once and shared: the hidden
/// states entering `layer`, the lower layers' keys and values, and their routing.
///
/// Made by [`Model::run_lower_layers`]; [`SharedPrompt::repeat`] copies it to a whole
/// population, and [`Model::forward_upper_layers`] runs layers `layer..` with hooks.
#[derive(Debug, Clone)]
pub struct SharedPrompt {
    layer: usize,
    hidden: Tensor,
    cache: KvCache,
    step: Step,
    routing: Option<Routing>,
}

impl SharedPrompt {
    /// The first layer not yet run: the one whose input this holds (the perturbed layer).
    pub fn layer(&self) -> usize {
        self.layer
    }

    /// The hidden states entering [`SharedPrompt::layer`], `[batch, seq, hidden]`.
    pub fn hidden(&self) -> &Tensor {
        &self.hidden
    }

    /// Rows of the prompt pass.
    pub fn batch_size(&self) -> usize {
        self.step.layout.batch
    }

    /// Copies a one-row shared prompt to `n` rows.
    pub fn repeat(&self, n: usize) -> Result<SharedPrompt> {
        Ok(SharedPrompt {
            layer: self.layer,
            hidden: repeat_rows(&self.hidden, n)?,
            // The prompt's own tokens are not committed to the cache yet (that happens
            // when the upper layers have run), so only the lower layers' tensors repeat.
            cache: KvCache {
                layers: self.cache.repeat_layers(n)?,
                ..KvCache::new(self.cache.layers.len())
            },
            step: self.step.repeat(n)?,
            routing: self.routing.clone(),
        })
    }
}

impl Model {
    /// Runs the prompt through layers `0..layer` once; no hook applies there.
    ///
    /// Records routing of those layers if `record_routing`.
    pub fn run_lower_layers(
        &self,
        batch: &TokenBatch,
        layer: usize,
        record_routing: bool,
    ) -> Result<SharedPrompt> {
        if layer >= self.num_layers() {
            return Err(self.layer_out_of_range(layer));
        }
        let mut cache = self.new_cache();
        let step = self.prepare(batch, &cache)?;
        let hooks = Hooks {
            record_routing,
            ..Hooks::default()
        };
        let mut recorder = Recorder::new(&hooks, batch.batch_size());
        let hidden = self.embed(batch)?;
        let hidden = self.run_layers(hidden, 0..layer, &step, &mut cache, &hooks, &mut recorder)?;
        Ok(SharedPrompt {
            layer,
            hidden,
            cache,
            step,
            routing: recorder.into_routing()?,
        })
    }

    /// Runs layers `shared.layer()..` with `hooks`; returns the output and the filled
    /// cache (ready for generation).
    ///
    /// A perturbation must target the shared prompt's layer or a later one.
    pub fn forward_upper_layers(
        &self,
        shared: &SharedPrompt,
        hooks: &Hooks,
        logits: LogitsMode,
    ) -> Result<(ForwardOutput, KvCache)> {
        if let Some(p) = hooks.perturb {
            if p.layer < shared.layer {
                return Err(ModelError::InvalidRequest(format!(
                    "perturbation at layer {} lies inside the shared prompt pass (layers below {})",
                    p.layer, shared.layer
                )));
            }
        }
        let mut cache = shared.cache.clone();
        let rows = shared.step.layout.batch;
        let mut recorder = Recorder::continuing(shared.routing.as_ref(), hooks, rows);
        let hidden = self.run_layers(
            shared.hidden.clone(),
            shared.layer..self.num_layers(),
            &shared.step,
            &mut cache,
            hooks,
            &mut recorder,
        )?;
        cache.commit(&shared.step.layout);
        Ok((recorder.into_output(self.head(&hidden, logits)?)?, cache))
    }
}
