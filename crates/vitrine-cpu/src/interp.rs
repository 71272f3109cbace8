//! PyTorch `F.interpolate` index and weight math (antialias off), per axis.
//!
//! Mirrors ATen's `area_pixel_compute_scale`, `area_pixel_compute_source_index`
//! and the bilinear / bicubic kernels. The source coordinate is computed with
//! one rounding (a fused multiply-add): two separate f32 roundings move the
//! bilinear weights by ~1e-5 on RADIO's 128 → 14 downsampling.

/// Keys' cubic convolution parameter used by PyTorch's bicubic mode.
const CUBIC_A: f32 = -0.75;

/// The taps and weights that produce one output coordinate along one axis.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AxisTaps<const N: usize> {
    /// Input indices, already clamped to the valid range.
    pub index: [usize; N],
    /// Weights, in the same order.
    pub weight: [f32; N],
}

/// ATen's `area_pixel_compute_scale` for a `size=` call: note that a
/// one-pixel output has scale 0 only with `align_corners`; without it the
/// scale stays `in / out` and the sample sits at the input's centre.
fn axis_scale(input: usize, output: usize, align_corners: bool) -> f32 {
    if !align_corners {
        input as f32 / output as f32
    } else if output > 1 {
        (input - 1) as f32 / (output - 1) as f32
    } else {
        0.0
    }
}

fn source_coordinate(scale: f32, dst: usize, align_corners: bool) -> f32 {
    if align_corners {
        scale * dst as f32
    } else {
        scale.mul_add(dst as f32 + 0.5, -0.5)
    }
}

/// Bilinear taps for output index `dst` of an `input → output` resize.
pub fn bilinear_taps(input: usize, output: usize, dst: usize, align_corners: bool) -> AxisTaps<2> {
    if input == output {
        return AxisTaps {
            index: [dst, dst],
            weight: [1.0, 0.0],
        };
    }
    let scale = axis_scale(input, output, align_corners);
    let s = source_coordinate(scale, dst, align_corners).max(0.0);
    let i0 = (s.floor() as usize).min(input - 1);
    let l1 = (s - i0 as f32).clamp(0.0, 1.0);
    let i1 = if i0 < input - 1 { i0 + 1 } else { i0 };
    AxisTaps {
        index: [i0, i1],
        weight: [1.0 - l1, l1],
    }
}

fn cubic_near(x: f32) -> f32 {
    ((CUBIC_A + 2.0) * x - (CUBIC_A + 3.0)) * x * x + 1.0
}

fn cubic_far(x: f32) -> f32 {
    ((CUBIC_A * x - 5.0 * CUBIC_A) * x + 8.0 * CUBIC_A) * x - 4.0 * CUBIC_A
}

/// Bicubic taps (Keys, A = -0.75, replicated borders) for output index `dst`.
pub fn bicubic_taps(input: usize, output: usize, dst: usize, align_corners: bool) -> AxisTaps<4> {
    let scale = axis_scale(input, output, align_corners);
    // Cubic mode keeps negative source coordinates (no clamp to 0).
    let s = source_coordinate(scale, dst, align_corners);
    let floor = (s.floor() as i64).min(input as i64 - 1);
    let t = (s - floor as f32).clamp(0.0, 1.0);
    let clamp = |i: i64| i.clamp(0, input as i64 - 1) as usize;
    AxisTaps {
        index: [
            clamp(floor - 1),
            clamp(floor),
            clamp(floor + 1),
            clamp(floor + 2),
        ],
        weight: [
            cubic_far(t + 1.0),
            cubic_near(t),
            cubic_near(1.0 - t),
            cubic_far(2.0 - t),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_identity() {
        for align in [false, true] {
            for d in 0..7 {
                let b = bilinear_taps(7, 7, d, align);
                assert_eq!((b.index[0], b.weight[0]), (d, 1.0));
                let c = bicubic_taps(7, 7, d, align);
                assert_eq!(c.weight, [0.0, 1.0, 0.0, 0.0]);
                assert_eq!(c.index[1], d);
            }
        }
    }

    #[test]
    fn weights_sum_to_one() {
        for (i, o) in [(8, 5), (8, 12), (128, 14), (6, 1)] {
            for d in 0..o {
                for align in [false, true] {
                    let b = bilinear_taps(i, o, d, align);
                    assert!((b.weight.iter().sum::<f32>() - 1.0).abs() < 1e-6);
                    let c = bicubic_taps(i, o, d, align);
                    assert!((c.weight.iter().sum::<f32>() - 1.0).abs() < 1e-5);
                }
            }
        }
    }
}
