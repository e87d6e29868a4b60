//! The key/value cache of a batch ([`KvCache`]): every layer's keys and values, with
//! each row's padding layout and next RoPE position.

use crate::error::{ModelError, Result};
use crate::layers::{LayerKv, TokenLayout};
use crate::rows::{repeat_rows, row_index};

/// Keys and values of past tokens, per layer, with the padding layout of each row.
#[derive(Debug, Clone)]
pub struct KvCache {
    /// Per decoder layer, its keys and values (`None` until the layer has run).
    pub(crate) layers: Vec<Option<LayerKv>>,
    /// Per row, which cached slots hold real tokens.
    pub(crate) key_valid: Vec<Vec<bool>>,
    /// Per row, the RoPE position of its next real token.
    pub(crate) next_position: Vec<usize>,
}

impl KvCache {
    /// An empty cache for a model of `layers` decoder layers.
    pub(crate) fn new(layers: usize) -> Self {
        KvCache {
            layers: vec![None; layers],
            key_valid: Vec::new(),
            next_position: Vec::new(),
        }
    }

    /// Number of cached token slots (padding included).
    pub fn len(&self) -> usize {
        self.key_valid.first().map_or(0, Vec::len)
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of rows.
    pub fn batch_size(&self) -> usize {
        self.key_valid.len()
    }

    /// The RoPE position the next real token of each row will get.
    pub fn next_positions(&self) -> &[usize] {
        &self.next_position
    }

    /// Copies a one-row cache to `n` rows (a population sharing a prompt).
    pub fn repeat(&self, n: usize) -> Result<KvCache> {
        if self.batch_size() != 1 {
            return Err(ModelError::InvalidRequest(format!(
                "only a one-row cache can be repeated, this one has {} rows",
                self.batch_size()
            )));
        }
        Ok(KvCache {
            layers: self.repeat_layers(n)?,
            key_valid: vec![self.key_valid[0].clone(); n],
            next_position: vec![self.next_position[0]; n],
        })
    }

    /// A cache whose row `j` is this cache's row `map[j]`, except that the layers below
    /// `split` keep only rows `map[..lower]`: for a twinned batch ([`crate::Model::forward_twinned`]) whose rows
    /// `lower..` repeat rows `..lower` there.
    pub(crate) fn select_rows_split(&self, map: &[usize], split: usize, lower: usize) -> Result<KvCache> {
        let layers = self
            .layers
            .iter()
            .enumerate()
            .map(|(l, c)| match c {
                Some(c) => {
                    let map = if l < split { &map[..lower] } else { map };
                    let (k, v) = (c.keys()?, c.values()?);
                    let index = row_index(map, k.device())?;
                    Ok(Some(LayerKv::new(
                        k.index_select(&index, 0)?,
                        v.index_select(&index, 0)?,
                    )?))
                }
                None => Ok(None),
            })
            .collect::<Result<_>>()?;
        Ok(KvCache {
            layers,
            key_valid: map.iter().map(|&r| self.key_valid[r].clone()).collect(),
            next_position: map.iter().map(|&r| self.next_position[r]).collect(),
        })
    }

    /// Every layer's keys and values copied from one row to `n` rows (the padding layout
    /// is left to the caller).
    pub(crate) fn repeat_layers(&self, n: usize) -> Result<Vec<Option<LayerKv>>> {
        self.layers
            .iter()
            .map(|l| match l {
                Some(c) => Ok(Some(LayerKv::new(
                    repeat_rows(&c.keys()?, n)?,
                    repeat_rows(&c.values()?, n)?,
                )?)),
                None => Ok(None),
            })
            .collect()
    }

    /// Commits the tokens of a finished forward call (laid out as `layout`) to the padding
    /// layout and next positions; the layers wrote their keys and values already.
    pub(crate) fn commit(&mut self, layout: &TokenLayout) {
        if self.key_valid.is_empty() {
            self.key_valid = vec![Vec::new(); layout.batch];
            self.next_position = vec![0; layout.batch];
        }
        for row in 0..layout.batch {
            let valid = &layout.valid[row * layout.seq..(row + 1) * layout.seq];
            self.key_valid[row].extend_from_slice(valid);
            self.next_position[row] += valid.iter().filter(|&&v| v).count();
        }
    }
}
