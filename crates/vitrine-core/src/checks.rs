//! Shape checks shared by every backend, so that each rejects the same bad
//! calls with the same message before touching memory.

use crate::{Error, Result, SeqLayout};

/// `(rows, cols)` of a 2-D shape.
pub fn rank2(op: &str, dims: &[usize]) -> Result<(usize, usize)> {
    match *dims {
        [r, c] => Ok((r, c)),
        _ => Err(Error::shape(
            op,
            format!("expected a 2-D tensor, got {dims:?}"),
        )),
    }
}

/// Checks q, k, v `[total, heads · head_dim]` against the packed layout;
/// returns `(total, width, head_dim)`.
pub fn attention(
    q: &[usize],
    k: &[usize],
    v: &[usize],
    seqs: &SeqLayout,
    heads: usize,
) -> Result<(usize, usize, usize)> {
    if k != q || v != q {
        return Err(Error::shape(
            "attention",
            format!("q {q:?}, k {k:?}, v {v:?} must be equal 2-D shapes"),
        ));
    }
    let (total, width) = rank2("attention", q)?;
    if heads == 0 || !width.is_multiple_of(heads) {
        return Err(Error::shape(
            "attention",
            format!("width {width} is not divisible by {heads} heads"),
        ));
    }
    if seqs.total() != total {
        return Err(Error::shape(
            "attention",
            format!("{total} rows, layout covers {}", seqs.total()),
        ));
    }
    Ok((total, width, width / heads))
}

/// Checks images `[b, c, h, w]` against the patch size; returns the dims.
pub fn patchify(dims: &[usize], patch: usize, normalise: bool) -> Result<[usize; 4]> {
    let [b, c, h, w] = *dims else {
        return Err(Error::shape(
            "patchify",
            format!("expected [b, c, h, w], got {dims:?}"),
        ));
    };
    if patch == 0 || !h.is_multiple_of(patch) || !w.is_multiple_of(patch) {
        return Err(Error::shape(
            "patchify",
            format!("{h}x{w} is not a multiple of patch {patch}"),
        ));
    }
    if normalise && c != 3 {
        return Err(Error::shape(
            "patchify",
            format!("normalisation needs 3 channels, got {c}"),
        ));
    }
    Ok([b, c, h, w])
}
