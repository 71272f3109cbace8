use crate::{Error, Result};

/// Packed variable-length layout: the tokens of several sequences stacked
/// along the row axis of one `[total, width]` tensor.
///
/// Attention never crosses a sequence boundary, so images of different sizes
/// can share one forward pass without padding (the `cu_seqlens` convention of
/// FlashAttention's varlen API).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeqLayout {
    offsets: Vec<usize>,
}

impl SeqLayout {
    /// Builds the layout from the length of each sequence.
    pub fn from_lengths(lengths: &[usize]) -> Result<Self> {
        if lengths.is_empty() {
            return Err(Error::InvalidArgument(
                "a batch needs at least one sequence".into(),
            ));
        }
        if lengths.contains(&0) {
            return Err(Error::InvalidArgument("sequences cannot be empty".into()));
        }
        let mut offsets = Vec::with_capacity(lengths.len() + 1);
        offsets.push(0);
        for &len in lengths {
            offsets.push(offsets.last().copied().unwrap_or(0) + len);
        }
        Ok(Self { offsets })
    }

    /// Cumulative offsets: sequence `i` is rows `offsets[i]..offsets[i + 1]`.
    pub fn offsets(&self) -> &[usize] {
        &self.offsets
    }

    /// Number of sequences.
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Always false: a layout holds at least one sequence.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Total number of rows.
    pub fn total(&self) -> usize {
        *self.offsets.last().unwrap_or(&0)
    }

    /// Row range of sequence `i`.
    pub fn range(&self, i: usize) -> std::ops::Range<usize> {
        self.offsets[i]..self.offsets[i + 1]
    }

    /// Length of the longest sequence (sizes kernel launches).
    pub fn max_len(&self) -> usize {
        (0..self.len())
            .map(|i| self.range(i).len())
            .max()
            .unwrap_or(0)
    }
}
