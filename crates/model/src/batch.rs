//! A batch of token sequences of unequal length, padded to a rectangle ([`TokenBatch`]).

/// A batch of token sequences of unequal length, left-padded to a rectangle.
///
/// ```
/// use latentevo_model::TokenBatch;
/// let batch = TokenBatch::left_padded(&[vec![5, 6, 7], vec![8]], 0);
/// assert_eq!(batch.ids(), &[vec![5, 6, 7], vec![0, 0, 8]]);
/// assert_eq!(batch.valid()[1], vec![false, false, true]);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBatch {
    ids: Vec<Vec<u32>>,
    valid: Vec<Vec<bool>>,
}

impl TokenBatch {
    /// Rows `0..n` of this batch.
    pub(crate) fn first_rows(&self, n: usize) -> TokenBatch {
        TokenBatch {
            ids: self.ids[..n].to_vec(),
            valid: self.valid[..n].to_vec(),
        }
    }

    /// Left-pads `sequences` with `pad_id` to the longest one.
    pub fn left_padded(sequences: &[Vec<u32>], pad_id: u32) -> Self {
        let len = sequences.iter().map(Vec::len).max().unwrap_or(0);
        let ids = sequences
            .iter()
            .map(|s| {
                std::iter::repeat_n(pad_id, len - s.len())
                    .chain(s.iter().copied())
                    .collect()
            })
            .collect();
        let valid = sequences
            .iter()
            .map(|s| {
                std::iter::repeat_n(false, len - s.len())
                    .chain(std::iter::repeat_n(true, s.len()))
                    .collect()
            })
            .collect();
        TokenBatch { ids, valid }
    }

    /// Right-pads `sequences` with `pad_id` to the longest one (e.g. continuations after a
    /// shared cached context, so that each row's tokens start at the same place).
    ///
    /// ```
    /// use latentevo_model::TokenBatch;
    /// let batch = TokenBatch::right_padded(&[vec![5, 6, 7], vec![8]], 0);
    /// assert_eq!(batch.ids(), &[vec![5, 6, 7], vec![8, 0, 0]]);
    /// ```
    pub fn right_padded(sequences: &[Vec<u32>], pad_id: u32) -> Self {
        let len = sequences.iter().map(Vec::len).max().unwrap_or(0);
        let pad = |s: &Vec<u32>| len - s.len();
        TokenBatch {
            ids: sequences
                .iter()
                .map(|s| {
                    s.iter()
                        .copied()
                        .chain(std::iter::repeat_n(pad_id, pad(s)))
                        .collect()
                })
                .collect(),
            valid: sequences
                .iter()
                .map(|s| {
                    std::iter::repeat_n(true, s.len())
                        .chain(std::iter::repeat_n(false, pad(s)))
                        .collect()
                })
                .collect(),
        }
    }

    /// One token per row (a generation step).
    pub fn column(tokens: &[u32]) -> Self {
        TokenBatch {
            ids: tokens.iter().map(|&t| vec![t]).collect(),
            valid: vec![vec![true]; tokens.len()],
        }
    }

    /// The padded ids, `[batch][seq]`.
    pub fn ids(&self) -> &[Vec<u32>] {
        &self.ids
    }

    /// Which entries are real tokens, `[batch][seq]`.
    pub fn valid(&self) -> &[Vec<bool>] {
        &self.valid
    }

    /// Number of rows.
    pub fn batch_size(&self) -> usize {
        self.ids.len()
    }

    /// Padded length.
    pub fn seq_len(&self) -> usize {
        self.ids.first().map_or(0, Vec::len)
    }
}
