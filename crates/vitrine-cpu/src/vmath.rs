//! Branch-free f32 `exp`, GELU and softmax, written so the compiler
//! vectorises them: AVX-512 (with the `avx512` feature) or AVX2 + FMA when
//! the CPU has them, chosen at run time, portable code otherwise. Every
//! multiply-add is an explicit `mul_add` (one rounding, in hardware or in
//! software), so the result does not depend on which path runs. Values are
//! processed in blocks of [`BLOCK`] so that several independent vectors are
//! in flight (the polynomials are long dependency chains).
//!
//! Accuracy (tested against f64): `exp` within 2 ulp; GELU within 2 ulp for
//! x ≥ −1/√2 and 8 ulp in the small negative tail, about what PyTorch's
//! vectorised GELU gives and far below the f32 parity bars; the rounding
//! errors that would otherwise dominate (|x|/√2, its square, the exponent)
//! are carried in two floats.

use std::mem::MaybeUninit;

/// Elements per block: four AVX2 vectors of f64 (two of f32).
const BLOCK: usize = 16;

/// Power-series coefficients (constant first), rounded to f32, of g(u) =
/// ln(erfc(a)) + a² − ln(t), t = 1/(1 + a/2), u = (2t − T_MIN − T_MAX) /
/// (T_MAX − T_MIN): a degree-10 Chebyshev fit on a ∈ [0, 10.5] (max error
/// 8e-9; f32 evaluation adds ~1e-7), converted for Horner's rule.
const ERFC_G: [f32; 11] = [
    -0.563_156_8,
    0.574_609_94,
    0.016_716_266,
    -0.030_146_481,
    -0.001_233_161,
    0.003_870_699_6,
    -0.000_256_602_94,
    -0.000_572_847_3,
    0.000_132_511_75,
    6.050_910_5e-5,
    -2.401_772e-5,
];
const T_MIN: f32 = 0.16;
const T_MAX: f32 = 1.0;
/// Taylor coefficients of erf(z)/z in z² (2/√π · (−1)ⁿ/(n!(2n+1))), enough
/// for |z| < 0.5 in f32.
const ERF_Z: [f32; 8] = [
    std::f32::consts::FRAC_2_SQRT_PI,
    -0.376_126_38,
    0.112_837_92,
    -0.026_866_172,
    0.005_223_978,
    -0.000_854_832_7,
    0.000_120_553_33,
    -1.492_565e-5,
];
/// 1/√2 as f32 plus the remainder.
const S_HI: f32 = std::f32::consts::FRAC_1_SQRT_2;
const S_LO: f32 = 1.210_161_7e-8;
/// `1.5 · 2²³`: adding it rounds an f32 of magnitude < 2²² to an integer.
const ROUND_MAGIC_F32: f32 = 12_582_912.0;
/// ln 2 split for f32 range reduction: `k · LN2_HI_F32` is exact for |k| < 2⁸.
const LN2_HI_F32: f32 = 0.693_145_75;
const LN2_LO_F32: f32 = 1.428_606_8e-6;

/// e^(yh + yl) in f32 for yh ≤ 0, |yl| ≪ 1 (the low part of an argument
/// carried in two floats), with gradual underflow; yh < −104 gives 0.
#[inline(always)]
fn exp_f32_2(yh: f32, yl: f32) -> f32 {
    let yh = if yh < -104.0 { -104.0 } else { yh };
    let kr = yh.mul_add(std::f32::consts::LOG2_E, ROUND_MAGIC_F32);
    let k = kr - ROUND_MAGIC_F32;
    let ki = (kr.to_bits() as i32).wrapping_sub(ROUND_MAGIC_F32.to_bits() as i32);
    let r = (-k).mul_add(LN2_LO_F32, (-k).mul_add(LN2_HI_F32, yh)) + yl;
    // eʳ, |r| ≤ 0.35: Taylor to degree 7 (truncation 5e-9).
    let mut p = EXP_TAYLOR[0];
    for &c in &EXP_TAYLOR[1..] {
        p = p.mul_add(r, c);
    }
    let p = p.mul_add(r, 1.0).mul_add(r, 1.0);
    // 2ᵏ as two normal factors (k ≥ −150), so tiny results underflow gradually.
    let k1 = ki >> 1;
    let k2 = ki - k1;
    p * f32::from_bits((k1.wrapping_add(127) << 23) as u32)
        * f32::from_bits((k2.wrapping_add(127) << 23) as u32)
}

/// eʸ in f32 for y ≤ 0 where only normal results matter: y < −87 gives 0
/// (e⁻⁸⁷ = 1.6e-38, the edge of f32's normal range), so no denormal is ever
/// produced or fed onward (each costs a microcode assist on Intel cores).
/// For softmax, where terms below e⁻⁸⁷ of the largest vanish in the sum.
#[inline(always)]
fn exp_f32_ftz(y: f32) -> f32 {
    let kr = y.mul_add(std::f32::consts::LOG2_E, ROUND_MAGIC_F32);
    let k = kr - ROUND_MAGIC_F32;
    let ki = (kr.to_bits() as i32).wrapping_sub(ROUND_MAGIC_F32.to_bits() as i32);
    let r = (-k).mul_add(LN2_LO_F32, (-k).mul_add(LN2_HI_F32, y));
    let mut p = EXP_TAYLOR[0];
    for &c in &EXP_TAYLOR[1..] {
        p = p.mul_add(r, c);
    }
    let p = p.mul_add(r, 1.0).mul_add(r, 1.0);
    let scaled = p * f32::from_bits((ki.wrapping_add(127).max(1) << 23) as u32);
    if y < -87.0 {
        0.0
    } else {
        scaled
    }
}

/// 1/n! for n = 7 down to 2: eʳ for |r| ≤ ln2/2 to 5e-9 (with the 1 + r).
const EXP_TAYLOR: [f32; 6] = [
    1.0 / 5040.0,
    1.0 / 720.0,
    1.0 / 120.0,
    1.0 / 24.0,
    1.0 / 6.0,
    0.5,
];

/// Exact-erf GELU `x·Φ(x)` of one value in f32 arithmetic, with the
/// rounding errors that matter carried along: |x|/√2 and its square in two
/// floats, then `x/2·(1 + erf(x/√2))` for |x| < 1/√2 (Taylor) and erfc
/// otherwise (`x·(1 − erfc/2)` or `x·erfc/2`, so neither tail cancels).
/// Within a few f32 ulps of the f64 value everywhere (tested).
#[inline(always)]
fn gelu_one(x: f32) -> f32 {
    let ax = x.abs();
    let ah = ax * S_HI;
    let al = ax.mul_add(S_HI, -ah) + ax * S_LO;
    // Small |x|: 1 + erf(z).
    let z2 = ah * ah;
    let mut pe = ERF_Z[7];
    for &c in ERF_Z[..7].iter().rev() {
        pe = pe.mul_add(z2, c);
    }
    let erf_a = ah.mul_add(pe, al * ERF_Z[0]);
    let erf_z = if x < 0.0 { -erf_a } else { erf_a };
    let small = 0.5 * x * (1.0 + erf_z);
    // Otherwise erfc(a) = t · exp(g(u) − a²).
    let (a, al) = if ah > 10.5 { (10.5, 0.0) } else { (ah, al) };
    let t0 = 1.0 / 0.5f32.mul_add(a, 1.0);
    let t = t0 * (-0.5 * al).mul_add(t0, 1.0);
    let u = t.mul_add(2.0 / (T_MAX - T_MIN), -(T_MIN + T_MAX) / (T_MAX - T_MIN));
    let mut g = ERFC_G[10];
    for &c in ERFC_G[..10].iter().rev() {
        g = g.mul_add(u, c);
    }
    let a2h = a * a;
    let a2l = a.mul_add(a, -a2h) + 2.0 * a * al;
    // yh + yl = g − a² (two-sum).
    let yh = g - a2h;
    let bb = yh - g;
    let yl = ((g - (yh - bb)) + (-a2h - bb)) - a2l;
    let e = t * exp_f32_2(yh, yl);
    let big = if x >= 0.0 {
        x * (-0.5f32).mul_add(e, 1.0)
    } else {
        0.5 * x * e
    };
    if ax < std::f32::consts::FRAC_1_SQRT_2 {
        small
    } else {
        big
    }
}

#[inline(always)]
fn gelu_body(x: &[f32], y: &mut [MaybeUninit<f32>]) {
    let mut xs = x.chunks_exact(BLOCK);
    let mut ys = y.chunks_exact_mut(BLOCK);
    for (yb, xb) in (&mut ys).zip(&mut xs) {
        for i in 0..BLOCK {
            yb[i].write(gelu_one(xb[i]));
        }
    }
    for (y, &v) in ys.into_remainder().iter_mut().zip(xs.remainder()) {
        y.write(gelu_one(v));
    }
}

/// In-place softmax of one row: eˣ⁻ᵐᵃˣ in f32 (within ~2 ulp, like the
/// `expf` candle's `softmax_last_dim` used; terms below e⁻⁸⁷ are 0), the sum
/// in f64, then each term divided by the sum rounded to f32, as candle
/// orders it. A NaN anywhere makes the whole row NaN (through the sum).
#[inline(always)]
fn softmax_body(row: &mut [f32]) {
    let mut lanes = [f32::NEG_INFINITY; BLOCK];
    let mut chunks = row.chunks_exact(BLOCK);
    for c in &mut chunks {
        for (m, &v) in lanes.iter_mut().zip(c) {
            *m = if v > *m { v } else { *m };
        }
    }
    let mut max = f32::NEG_INFINITY;
    for &v in lanes.iter().chain(chunks.remainder()) {
        max = if v > max { v } else { max };
    }
    let mut sums = [0.0f64; BLOCK];
    let mut chunks = row.chunks_exact_mut(BLOCK);
    for c in &mut chunks {
        for (s, v) in sums.iter_mut().zip(c.iter_mut()) {
            *v = exp_f32_ftz(*v - max);
            *s += *v as f64;
        }
    }
    let mut sum: f64 = sums.iter().sum();
    for v in chunks.into_remainder() {
        *v = exp_f32_ftz(*v - max);
        sum += *v as f64;
    }
    let sum = sum as f32;
    for v in row.iter_mut() {
        *v /= sum;
    }
}

/// Runs `$body` under the best instruction set this CPU and build allow:
/// AVX-512 (with the `avx512` feature), AVX2 + FMA, or the portable code
/// (same results: every multiply-add is an explicit `mul_add`).
macro_rules! dispatch {
    ($name:ident ( $($arg:ident : $ty:ty),* ) $body:block) => {
        pub(crate) fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")]
                unsafe fn wide($($arg: $ty),*) { body($($arg),*) }
                if std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512vl")
                    && std::is_x86_feature_detected!("avx512dq")
                    && std::is_x86_feature_detected!("avx512bw")
                {
                    // SAFETY: the CPU has these features.
                    return unsafe { wide($($arg),*) };
                }
            }
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) { body($($arg),*) }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has AVX2 and FMA.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

dispatch!(gelu_dispatch(x: &[f32], y: &mut [MaybeUninit<f32>]) {
    gelu_body(x, y)
});

/// `y = gelu(x)` elementwise; writes every element of `y` (same length as
/// `x`).
pub(crate) fn gelu_into(x: &[f32], y: &mut [MaybeUninit<f32>]) {
    assert_eq!(x.len(), y.len(), "gelu_into lengths");
    gelu_dispatch(x, y)
}

dispatch!(softmax_dispatch(x: &mut [f32], width: usize) {
    for row in x.chunks_exact_mut(width) {
        softmax_body(row)
    }
});

/// Softmax of each `width`-wide row of `x`, in place.
pub(crate) fn softmax_rows(x: &mut [f32], width: usize) {
    if width > 0 {
        softmax_dispatch(x, width)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f32) -> u32 {
        if a == b {
            return 0;
        }
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_matches_f64() {
        let mut worst = 0;
        let mut y = -104.0f32;
        while y <= 0.0 {
            let want = (y as f64).exp() as f32;
            worst = worst.max(ulps(exp_f32_2(y, 0.0), want));
            y += 0.000_37;
        }
        assert!(worst <= 2, "exp differs from f64 exp by {worst} ulp");
        assert!(exp_f32_2(f32::NAN, 0.0).is_nan());
        assert_eq!(exp_f32_2(-1e30, 0.0), 0.0);
        assert_eq!(exp_f32_2(f32::NEG_INFINITY, 0.0), 0.0);
        assert_eq!(exp_f32_2(0.0, 0.0), 1.0);
        let mut worst = 0;
        let mut y = -87.0f32;
        while y <= 0.0 {
            let want = (y as f64).exp() as f32;
            worst = worst.max(ulps(exp_f32_ftz(y), want));
            y += 0.000_37;
        }
        assert!(
            worst <= 2,
            "exp_f32_ftz differs from f64 exp by {worst} ulp"
        );
        assert_eq!(exp_f32_ftz(-87.5), 0.0);
        assert_eq!(exp_f32_ftz(f32::NEG_INFINITY), 0.0);
        assert!(exp_f32_ftz(f32::NAN).is_nan());
    }

    #[test]
    fn gelu_matches_libm_reference() {
        // x·erfc(−x/√2)/2 with libm's f64 erfc: the exact-erf GELU without
        // the cancellation of 1 + erf(x/√2) far in the negative tail.
        let reference = |v: f32| {
            let v = v as f64;
            (0.5 * v * libm::erfc(-v * std::f64::consts::FRAC_1_SQRT_2)) as f32
        };
        // Worst ulps for x ≥ −1/√2 (where GELU is ≥ 0.17·|x|) and in the
        // negative tail, where the value is small and carries erfc's error.
        let (mut core, mut tail) = (0, 0);
        let mut x = -16.0f32;
        while x < 16.0 {
            let d = ulps(gelu_one(x), reference(x));
            if x >= -std::f32::consts::FRAC_1_SQRT_2 {
                core = core.max(d);
            } else {
                tail = tail.max(d);
            }
            x += 0.000_731;
        }
        eprintln!("gelu: worst {core} ulp for x >= -0.707, {tail} ulp below");
        assert!(
            core <= 2,
            "gelu differs from the f64 reference by {core} ulp"
        );
        assert!(
            tail <= 8,
            "gelu tail differs from the f64 reference by {tail} ulp"
        );
        assert!(gelu_one(f32::NAN).is_nan());
        assert_eq!(gelu_one(f32::INFINITY), f32::INFINITY);
        assert_eq!(gelu_one(0.0), 0.0);
        let (mut a, mut b) = (
            vec![MaybeUninit::uninit(); 100],
            vec![MaybeUninit::uninit(); 100],
        );
        let xs: Vec<f32> = (0..100).map(|i| i as f32 * 0.37 - 18.0).collect();
        gelu_into(&xs, &mut a);
        gelu_body(&xs, &mut b);
        // SAFETY: both calls wrote every element.
        let (a, b): (Vec<f32>, Vec<f32>) = unsafe {
            (
                a.iter().map(|v| v.assume_init()).collect(),
                b.iter().map(|v| v.assume_init()).collect(),
            )
        };
        assert_eq!(a, b, "dispatched and portable paths agree bit for bit");
    }

    #[test]
    fn softmax_rows_sum_to_one() {
        let mut x: Vec<f32> = (0..3 * 37).map(|i| (i as f32 * 0.71).sin() * 9.0).collect();
        softmax_rows(&mut x, 37);
        for row in x.chunks(37) {
            let s: f64 = row.iter().map(|&v| v as f64).sum();
            assert!((s - 1.0).abs() < 1e-6);
        }
        let mut y = vec![1.0, f32::NAN, 2.0];
        softmax_rows(&mut y, 3);
        assert!(y.iter().all(|v| v.is_nan()));
    }
}
