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
    /// applies (f16/bf16, head_dim 33..=80 and 97..=128) (`VITRINE_GPU_ATTENTION=hopper`),
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
    /// Consumer warpgroups per block, 64 query rows each; the block has one
    /// more, the producer that fetches K/V tiles.
    warpgroups: usize,
    /// Blocks from which it beats the portable fused kernel.
    min_blocks: usize,
    /// Whether one block per multiprocessor walks all the query tiles
    /// (persistent): the next tile's Q arrives while one runs, where Q lives
    /// in registers (d64, d80); with Q read from shared memory by the MMAs
    /// (d128) it cannot, and one block per tile was faster.
    persistent: bool,
}

/// The Hopper kernel's shapes, as instantiated in kernels/attention.cu
/// (`vt_flash_attention_wg_<dt>_d<head_dim>_w<warpgroups>`), each with the
/// blocks from which it beats the portable fused kernel. H100, ms, one run
/// (docs/performance.md row 33): d80, 96 blocks (512², batch 1) 0.0271
/// against 0.0456, 32 blocks (224², batch 1) 0.0109 against 0.0099; d64, 96
/// blocks (448², batch 1) 0.0242 against 0.0372, 32 blocks (224², batch 1)
/// 0.0109 against 0.0095; d128 (InternViT-6B 448², 25 heads; PyTorch's flash
/// kernel in brackets), Q in shared memory and K/V by TMA (rows 40–41):
/// 1200 blocks (batch 8) 0.347 against 0.542 (0.383), 150 blocks (batch 1)
/// 0.062 against 0.089 (0.060). Persistent at d64/d80 (rows 43–44), against
/// one block per tile, interleaved runs: 512² batch 32 0.567 against 0.591,
/// 1024² batch 4 0.861 against 0.901, InternViT 448² batch 32 0.489 against
/// 0.519.
const HOPPER_TILES: [HopperTile; 3] = [
    HopperTile {
        head_dim: 64,
        warpgroups: 3,
        min_blocks: 64,
        persistent: true,
    },
    HopperTile {
        head_dim: 80,
        warpgroups: 3,
        min_blocks: 64,
        persistent: true,
    },
    HopperTile {
        head_dim: 128,
        warpgroups: 3,
        min_blocks: 64,
        persistent: false,
    },
];

/// Keys per K/V tile of the Hopper kernel, tiles in its shared ring, and the
/// two mbarriers (8 bytes each) per tile that pass them between producer and
/// consumers (`WG_STAGES` in kernels/attention.cu); the padding of a
/// shared Q row (`WG_QPAD`) and the Q tiles' two mbarriers.
const HOPPER_KEYS: usize = 64;
const HOPPER_STAGES: usize = 4;
const HOPPER_BARRIER_BYTES: usize = 16;
const HOPPER_Q_PAD: usize = 8;
const HOPPER_Q_BARRIER_BYTES: usize = 16;

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
    /// Multiprocessors: the grid of a persistent kernel.
    pub multiprocessors: usize,
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
        /// Whether the kernel takes TMA tensor maps after the shared
        /// arguments (the Hopper kernel: `use_tma`, `q_map`, `k_map`,
        /// `v_map`).
        tensor_maps: bool,
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
        // Large enough grids take it; forced, every grid does.
        let chosen = HOPPER_TILES.into_iter().find(|t| {
            t.head_dim == padded
                && (mode == AttentionKernel::Hopper || blocks(64 * t.warpgroups) >= t.min_blocks)
        });
        if let Some(tile) = chosen {
            let wg = tile.warpgroups;
            let elem = call.dtype.size_in_bytes();
            let ring = HOPPER_STAGES * (2 * HOPPER_KEYS * padded * elem + HOPPER_BARRIER_BYTES);
            let q_tiles = wg * 64 * (padded + HOPPER_Q_PAD) * elem + HOPPER_Q_BARRIER_BYTES;
            let items = blocks(64 * wg);
            return Ok(Plan::Tiled {
                name: format!("vt_flash_attention_wg_{dt}_d{padded}_w{wg}"),
                blocks: match tile.persistent {
                    true => items.min(device.multiprocessors.max(1)),
                    false => items,
                },
                threads: 128 * (wg + 1) as u32,
                shared: (ring + q_tiles) as u32,
                tensor_maps: true,
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
        tensor_maps: false,
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

    /// The kernel `VITRINE_GPU_ATTENTION=hopper` picks for `c` on an H100.
    fn forced(c: &Call) -> String {
        name(&plan(AttentionKernel::Hopper, c, H100).unwrap()).to_string()
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
                // Persistent: one block per multiprocessor for 32 · 16 · 6 tiles.
                blocks: 132,
                // Three consumer warpgroups and the producer.
                threads: 512,
                // Four K/V tiles of 64 keys and two mbarriers per tile, then
                // three Q tiles of 64 rows (80 + 8 elements) and their two.
                shared: 4 * (2 * 64 * 80 * 2 + 16) + 3 * 64 * 88 * 2 + 16,
                tensor_maps: true,
            })
        );
        assert_eq!(
            plan(AUTO, &c, NO_WGMMA),
            Ok(Plan::Tiled {
                name: "vt_flash_attention_f16_d80_m2".into(),
                blocks: 32 * 16 * 9,
                threads: 128,
                shared: 0,
                tensor_maps: false,
            })
        );
        let p = plan(AttentionKernel::Portable, &c, H100).unwrap();
        assert_eq!(name(&p), "vt_flash_attention_f16_d80_m2");
        // InternViT-300M 448² batch 32 (d64).
        let p = plan(AUTO, &call(DType::BF16, 64, 32, 1025, 16), H100).unwrap();
        assert_eq!(name(&p), "vt_flash_attention_wg_bf16_d64_w3");
    }

    #[test]
    fn small_grids_take_fuller_blocks_or_the_portable_kernel() {
        // 224² batch 1 (32 blocks of 192 rows): below d80's 64.
        let p = plan(AUTO, &call(DType::F16, 80, 1, 206, 16), H100).unwrap();
        assert_eq!(name(&p), "vt_flash_attention_f16_d80_m1");
        // 512² batch 1 (96 blocks) is above it.
        let p = plan(AUTO, &call(DType::F16, 80, 1, 1034, 16), H100).unwrap();
        assert_eq!(name(&p), "vt_flash_attention_wg_f16_d80_w3");
        // InternViT 448² batch 1 at d64: 96 blocks of 192 rows.
        let p = plan(AUTO, &call(DType::F16, 64, 1, 1025, 16), H100).unwrap();
        assert_eq!(
            p,
            Plan::Tiled {
                name: "vt_flash_attention_wg_f16_d64_w3".into(),
                blocks: 16 * 6,
                threads: 512,
                shared: 4 * (2 * 64 * 64 * 2 + 16) + 3 * 64 * 72 * 2 + 16,
                tensor_maps: true,
            }
        );
        // 224² batch 1 (32 blocks of 192 rows): the portable kernel.
        let p = plan(AUTO, &call(DType::F16, 64, 1, 257, 16), H100).unwrap();
        assert_eq!(name(&p), "vt_flash_attention_f16_d64_m1");
        // Forced, even a tiny grid takes the Hopper kernel.
        assert_eq!(
            forced(&call(DType::F16, 64, 1, 9, 1)),
            "vt_flash_attention_wg_f16_d64_w3"
        );
    }

    #[test]
    fn head_dims_pad_to_an_instantiated_kernel() {
        let p = plan(AUTO, &call(DType::F16, 72, 32, 1034, 16), H100).unwrap();
        assert_eq!(name(&p), "vt_flash_attention_wg_f16_d80_w3");
        // InternViT-6B (d128) takes it, one block per query tile (not
        // persistent); no Hopper kernel at d96 (unmeasured).
        let p = plan(AUTO, &call(DType::F16, 128, 8, 1025, 25), H100).unwrap();
        assert_eq!(
            p,
            Plan::Tiled {
                name: "vt_flash_attention_wg_f16_d128_w3".into(),
                blocks: 8 * 25 * 6,
                threads: 512,
                shared: 4 * (2 * 64 * 128 * 2 + 16) + 3 * 64 * 136 * 2 + 16,
                tensor_maps: true,
            }
        );
        assert_eq!(
            forced(&call(DType::F16, 96, 32, 1025, 25)),
            "vt_flash_attention_f16_d96_m2"
        );
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
    fn forcing_the_hopper_kernel_without_it_is_an_error() {
        let c = call(DType::F16, 80, 32, 1034, 16);
        assert!(plan(AttentionKernel::Hopper, &c, NO_WGMMA).is_err());
        let c = call(DType::F32, 80, 1, 10, 1);
        assert!(plan(AttentionKernel::Hopper, &c, NO_WGMMA).is_err());
    }
}
