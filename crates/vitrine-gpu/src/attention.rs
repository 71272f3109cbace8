//! Which attention kernel a call runs, and its launch shape: the reference
//! kernel, the portable fused one (every vendor) or, on Hopper, the
//! warpgroup-MMA one. A pure function of the call's shape, the mode and the
//! device's capability, so the choice is unit-tested without a GPU.

use vitrine_core::{DType, Error, Result};

/// Which attention kernel runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AttentionKernel {
    /// The fused tensor-core kernel for f16/bf16 with head_dim <= 128, the
    /// reference kernel otherwise (f32 keeps exact fp32 products).
    Auto,
    /// Always the reference kernel (`VITRINE_GPU_ATTENTION=reference`): the
    /// yardstick the fused kernel is checked against.
    Reference,
    /// The fused kernel's 128-row tiles whatever the size
    /// (`VITRINE_GPU_ATTENTION=wide`), so the op suite's small cases test
    /// the variant that large batches run.
    Wide,
    /// Never the Hopper kernel (`VITRINE_GPU_ATTENTION=portable`): the
    /// fused kernel every vendor runs, also on an H100.
    Portable,
    /// The Hopper (warpgroup MMA) kernel whatever the size, wherever it
    /// applies (f16/bf16, head_dim 33..=80) (`VITRINE_GPU_ATTENTION=hopper`),
    /// so the op suite's small cases test it; an error on a device without it.
    Hopper,
}

/// Blocks of 128 query rows from which the fused kernel's larger tiles still
/// fill a large GPU (132 SMs on an H100) several times over.
const FUSED_ENOUGH_BLOCKS: usize = 1024;
/// Head dims the fused kernel is instantiated for (`d<N>` suffixes).
const FUSED_HEAD_DIMS: [usize; 5] = [32, 64, 80, 96, 128];
/// One shape of the Hopper (warpgroup-MMA) attention kernel.
#[derive(Clone, Copy)]
struct HopperTile {
    /// Padded head dim (`d<N>` suffix).
    head_dim: usize,
    /// Warpgroups per block, 64 query rows each.
    warpgroups: usize,
    /// Blocks resident on one multiprocessor (registers and shared memory
    /// allow this many; `VT_LAUNCH_BOUNDS` in kernels/attention.cu).
    blocks_per_sm: usize,
    /// Blocks from which it beats the portable fused kernel.
    min_blocks: usize,
}

/// The Hopper kernel's shapes, as instantiated in kernels/attention.cu
/// (`vt_flash_attention_wg_<dt>_d<head_dim>_w<warpgroups>`), each with the
/// blocks from which it beats the portable fused kernel. Where a head dim
/// has several, the one whose grid fills its last wave best runs (ties: the
/// first). H100, d80 (3 warpgroups, one block per SM): 96 blocks (512²,
/// batch 1) 0.040 against 0.050 ms, 32 blocks (224², batch 1) 0.016 against
/// 0.012. d64, two warpgroups (two blocks per SM): 4608 blocks (448² batch 32) 0.70
/// against 0.68 for three warpgroups (3072 blocks; both fill 97 % of their
/// last wave; end to end two are 0.4 % faster), 432 blocks (448² batch 3)
/// 0.078 against three warpgroups' 0.087 (288 blocks: 2.2 waves), 144
/// blocks (448² batch 1) 0.039 against the portable kernel's 0.036.
const HOPPER_TILES: [HopperTile; 3] = [
    HopperTile {
        head_dim: 64,
        warpgroups: 2,
        blocks_per_sm: 2,
        min_blocks: 400,
    },
    HopperTile {
        head_dim: 64,
        warpgroups: 3,
        blocks_per_sm: 1,
        min_blocks: MIN_BLOCKS_D64_W3,
    },
    HopperTile {
        head_dim: 80,
        warpgroups: 3,
        blocks_per_sm: 1,
        min_blocks: 64,
    },
];

/// d64 with three warpgroups (192 rows a block, one block per SM): the shape
/// for grids too small for two warpgroups, and for those whose last wave it
/// fills better. H100, ms (portable kernel, PyTorch's flash):
/// 448² batch 1, 96 blocks: 0.0303 (0.0356, 0.0350); batch 2, 192 blocks:
/// 0.0589 (0.0632, 0.0604); 224² batch 8, 256 blocks: 0.0253 (0.0263,
/// 0.0281); but 224² batch 1, 32 blocks: 0.0128 (0.0093, 0.0125). End to
/// end, InternViT 448² batch 4 (384 blocks against two warpgroups' 576, 97 %
/// against 73 % of the last wave): 7.97–8.04 against 8.41–8.56 ms.
const MIN_BLOCKS_D64_W3: usize = 64;

/// Keys per K/V tile of the Hopper kernel, and tiles in its shared ring.
const HOPPER_KEYS: usize = 64;
const HOPPER_STAGES: usize = 3;

impl AttentionKernel {
    pub(crate) fn from_env() -> Result<Self> {
        match std::env::var("VITRINE_GPU_ATTENTION").as_deref() {
            Err(_) | Ok("") | Ok("auto") => Ok(Self::Auto),
            Ok("reference") => Ok(Self::Reference),
            Ok("wide") => Ok(Self::Wide),
            Ok("portable") => Ok(Self::Portable),
            Ok("hopper") => Ok(Self::Hopper),
            Ok(other) => Err(Error::InvalidArgument(format!(
                "VITRINE_GPU_ATTENTION={other}: expected auto, reference, wide, portable or hopper"
            ))),
        }
    }

    /// The instantiated head dim the fused kernel would pad `head_dim` to.
    fn fused_head_dim(self, dtype: DType, head_dim: usize) -> Option<usize> {
        if self == Self::Reference || dtype == DType::F32 {
            return None;
        }
        FUSED_HEAD_DIMS.into_iter().find(|&d| d >= head_dim)
    }
}

/// What the kernel choice needs to know about the device.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Device {
    /// Hopper's warpgroup MMA (compute capability 9.0).
    pub warpgroup_mma: bool,
    /// Multiprocessors, to count a grid's waves.
    pub multiprocessors: usize,
}

/// The share of the last wave's slots a grid of `blocks` uses, each wave
/// being `per_wave` blocks: 1.0 when it ends on a whole wave.
fn last_wave_fill(blocks: usize, per_wave: usize) -> f64 {
    let per_wave = per_wave.max(1);
    blocks as f64 / (blocks.div_ceil(per_wave) * per_wave) as f64
}

/// The shape of one attention call, as far as the kernel choice goes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Call {
    pub dtype: DType,
    pub head_dim: usize,
    pub scale: f32,
    /// Sequences in the packed layout, and the longest one.
    pub seqs: usize,
    pub max_len: usize,
    pub heads: usize,
}

/// What to launch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// A tiled kernel: one block per (sequence, head, query tile).
    Tiled {
        name: String,
        blocks: usize,
        threads: u32,
        /// Dynamic shared memory per block, bytes.
        shared: u32,
    },
    /// The reference kernel (grid-stride over (row, head) pairs; the caller
    /// sizes it to the device's wave).
    Reference { name: String },
}

/// Picks the kernel for `call`. The error is the unsupported request
/// (`VITRINE_GPU_ATTENTION=hopper` on a device without warpgroup MMA).
pub(crate) fn plan(
    mode: AttentionKernel,
    call: &Call,
    device: Device,
) -> std::result::Result<Plan, &'static str> {
    if mode == AttentionKernel::Hopper && !device.warpgroup_mma {
        return Err(
            "VITRINE_GPU_ATTENTION=hopper (warpgroup-MMA attention, compute capability 9.0)",
        );
    }
    let dt = call.dtype.as_str();
    let Some(padded) = mode
        .fused_head_dim(call.dtype, call.head_dim)
        .filter(|_| call.scale > 0.0)
    else {
        return Ok(Plan::Reference {
            name: format!("vt_attention_{dt}"),
        });
    };
    // Blocks of `rows` query rows over every (sequence, head).
    let blocks = |rows: usize| call.seqs * call.heads * call.max_len.div_ceil(rows);
    if device.warpgroup_mma && matches!(mode, AttentionKernel::Auto | AttentionKernel::Hopper) {
        let shapes = || HOPPER_TILES.into_iter().filter(|t| t.head_dim == padded);
        let fill = |t: &HopperTile| {
            last_wave_fill(
                blocks(64 * t.warpgroups),
                t.blocks_per_sm * device.multiprocessors,
            )
        };
        // Of the shapes whose grid is large enough, the one that fills its
        // last wave best (the first on ties); forced, the last one (the
        // small-grid shape) when none is.
        let chosen = shapes()
            .filter(|t| blocks(64 * t.warpgroups) >= t.min_blocks)
            .reduce(|best, t| if fill(&t) > fill(&best) { t } else { best })
            .or_else(|| {
                shapes()
                    .next_back()
                    .filter(|_| mode == AttentionKernel::Hopper)
            });
        if let Some(tile) = chosen {
            let wg = tile.warpgroups;
            return Ok(Plan::Tiled {
                name: format!("vt_flash_attention_wg_{dt}_d{padded}_w{wg}"),
                blocks: blocks(64 * wg),
                threads: 128 * wg as u32,
                shared: (HOPPER_STAGES * 2 * HOPPER_KEYS * padded * call.dtype.size_in_bytes())
                    as u32,
            });
        }
    }
    // The portable fused kernel, 4 tile groups per block: two m-tiles per
    // group (128 rows) share each K/V fragment among more queries, which pays
    // from head dim 80 up on big grids (H100, d80: 1024² batch 4, 20% faster;
    // 512² batch 32, 2%, with 10% padded rows on the last tile); one (64
    // rows) keeps a small batch from leaving most of the GPU idle, and at d64
    // its lighter registers (4 blocks per SM) win (InternViT 448² batch 32:
    // 4–8%).
    let wide = mode == AttentionKernel::Wide;
    let mt = if wide || (padded >= 80 && blocks(128) >= FUSED_ENOUGH_BLOCKS) {
        2
    } else {
        1
    };
    Ok(Plan::Tiled {
        name: format!("vt_flash_attention_{dt}_d{padded}_m{mt}"),
        blocks: blocks(64 * mt),
        threads: 128,
        shared: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(dtype: DType, head_dim: usize, seqs: usize, max_len: usize, heads: usize) -> Call {
        Call {
            dtype,
            head_dim,
            scale: (head_dim as f32).powf(-0.5),
            seqs,
            max_len,
            heads,
        }
    }

    fn name(p: &Plan) -> &str {
        match p {
            Plan::Tiled { name, .. } | Plan::Reference { name } => name,
        }
    }

    const AUTO: AttentionKernel = AttentionKernel::Auto;
    const H100: Device = Device {
        warpgroup_mma: true,
        multiprocessors: 132,
    };
    const NO_WGMMA: Device = Device {
        warpgroup_mma: false,
        multiprocessors: 132,
    };

    #[test]
    fn large_grids_take_the_hopper_kernel_only_where_it_runs() {
        // RADIO-H 512² batch 32: 1034 tokens, 16 heads of 80.
        let c = call(DType::F16, 80, 32, 1034, 16);
        assert_eq!(
            plan(AUTO, &c, H100),
            Ok(Plan::Tiled {
                name: "vt_flash_attention_wg_f16_d80_w3".into(),
                blocks: 32 * 16 * 6,
                threads: 384,
                shared: 3 * 2 * 64 * 80 * 2,
            })
        );
        assert_eq!(
            plan(AUTO, &c, NO_WGMMA),
            Ok(Plan::Tiled {
                name: "vt_flash_attention_f16_d80_m2".into(),
                blocks: 32 * 16 * 9,
                threads: 128,
                shared: 0,
            })
        );
        let p = plan(AttentionKernel::Portable, &c, H100).unwrap();
        assert_eq!(name(&p), "vt_flash_attention_f16_d80_m2");
        // InternViT-300M 448² batch 32 (d64, two warpgroups).
        let p = plan(AUTO, &call(DType::BF16, 64, 32, 1025, 16), H100).unwrap();
        assert_eq!(name(&p), "vt_flash_attention_wg_bf16_d64_w2");
    }

    #[test]
    fn small_grids_take_fuller_blocks_or_the_portable_kernel() {
        // 224² batch 1 (32 blocks of 192 rows): below d80's 64.
        let p = plan(AUTO, &call(DType::F16, 80, 1, 206, 16), H100).unwrap();
        assert_eq!(name(&p), "vt_flash_attention_f16_d80_m1");
        // 512² batch 1 (96 blocks) is above it.
        let p = plan(AUTO, &call(DType::F16, 80, 1, 1034, 16), H100).unwrap();
        assert_eq!(name(&p), "vt_flash_attention_wg_f16_d80_w3");
        // InternViT 448² batch 1 at d64: 144 blocks of 128 rows, below 400;
        // 96 of 192 rows take the three-warpgroup shape.
        let p = plan(AUTO, &call(DType::F16, 64, 1, 1025, 16), H100).unwrap();
        assert_eq!(
            p,
            Plan::Tiled {
                name: "vt_flash_attention_wg_f16_d64_w3".into(),
                blocks: 16 * 6,
                threads: 384,
                shared: 3 * 2 * 64 * 64 * 2,
            }
        );
        // Batch 3: 432 blocks of 128 rows fill 82 % of their last wave (two
        // per SM), 288 of 192 rows 73 %: two warpgroups.
        let p = plan(AUTO, &call(DType::F16, 64, 3, 1025, 16), H100).unwrap();
        assert_eq!(name(&p), "vt_flash_attention_wg_f16_d64_w2");
        // Batch 4: 576 blocks (73 %) against 384 (97 %): three.
        let p = plan(AUTO, &call(DType::F16, 64, 4, 1025, 16), H100).unwrap();
        assert_eq!(name(&p), "vt_flash_attention_wg_f16_d64_w3");
        // Batch 32: both 97 %, so the first shape, two warpgroups.
        let p = plan(AUTO, &call(DType::F16, 64, 32, 1025, 16), H100).unwrap();
        assert_eq!(name(&p), "vt_flash_attention_wg_f16_d64_w2");
        // Waves depend on the device: with 114 multiprocessors (H100 PCIe)
        // batch 4 fills 576 / 684 = 84 % against 384 / 456 = 84 %: a tie.
        let pcie = Device {
            multiprocessors: 114,
            ..H100
        };
        let p = plan(AUTO, &call(DType::F16, 64, 4, 1025, 16), pcie).unwrap();
        assert_eq!(name(&p), "vt_flash_attention_wg_f16_d64_w2");
        // 224² batch 1 (32 blocks of 192 rows): the portable kernel.
        let p = plan(AUTO, &call(DType::F16, 64, 1, 257, 16), H100).unwrap();
        assert_eq!(name(&p), "vt_flash_attention_f16_d64_m1");
        // Forced, even a tiny grid takes a Hopper shape: the small-grid one.
        let p = plan(
            AttentionKernel::Hopper,
            &call(DType::F16, 64, 1, 9, 1),
            H100,
        )
        .unwrap();
        assert_eq!(name(&p), "vt_flash_attention_wg_f16_d64_w3");
    }

    #[test]
    fn head_dims_pad_to_an_instantiated_kernel() {
        let p = plan(AUTO, &call(DType::F16, 72, 32, 1034, 16), H100).unwrap();
        assert_eq!(name(&p), "vt_flash_attention_wg_f16_d80_w3");
        // No Hopper kernel at d128 (slower than the portable one) nor d96.
        for d in [96, 128] {
            let p = plan(
                AttentionKernel::Hopper,
                &call(DType::F16, d, 32, 1025, 25),
                H100,
            )
            .unwrap();
            assert_eq!(name(&p), format!("vt_flash_attention_f16_d{d}_m2"));
        }
        let p = plan(AUTO, &call(DType::F16, 160, 1, 10, 1), H100).unwrap();
        assert_eq!(name(&p), "vt_attention_f16");
    }

    #[test]
    fn f32_and_the_reference_mode_take_the_reference_kernel() {
        let c = call(DType::F32, 80, 32, 1034, 16);
        for mode in [AUTO, AttentionKernel::Hopper, AttentionKernel::Wide] {
            assert_eq!(name(&plan(mode, &c, H100).unwrap()), "vt_attention_f32");
        }
        let c = call(DType::F16, 80, 32, 1034, 16);
        let p = plan(AttentionKernel::Reference, &c, H100).unwrap();
        assert_eq!(name(&p), "vt_attention_f16");
        // A non-positive scale breaks the fused kernels' max-before-scale trick.
        let c = Call { scale: -1.0, ..c };
        assert_eq!(name(&plan(AUTO, &c, H100).unwrap()), "vt_attention_f16");
    }

    #[test]
    fn wave_fill_counts_the_last_wave_only() {
        assert_eq!(last_wave_fill(264, 264), 1.0);
        assert_eq!(last_wave_fill(132, 264), 0.5);
        assert_eq!(last_wave_fill(396, 264), 0.75);
        assert_eq!(last_wave_fill(7, 0), 1.0);
    }

    #[test]
    fn forcing_the_hopper_kernel_without_it_is_an_error() {
        let c = call(DType::F16, 80, 32, 1034, 16);
        assert!(plan(AttentionKernel::Hopper, &c, NO_WGMMA).is_err());
        let c = call(DType::F32, 80, 1, 10, 1);
        assert!(plan(AttentionKernel::Hopper, &c, NO_WGMMA).is_err());
    }
}
