/// Interpolation kernel of a 2-D resize, with PyTorch `F.interpolate`
/// semantics (antialias off).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResizeMode {
    /// Two taps per axis; RADIO's CPE position grid.
    Bilinear,
    /// Four taps per axis, Keys kernel with A = -0.75, clamped borders;
    /// InternViT's position grid.
    Bicubic,
}

/// A resize of a channels-last grid `[in_h, in_w, C]` to `[out_h, out_w]`,
/// of which only the top-left `window_h × window_w` corner is produced.
///
/// RADIO's CPE resizes its table to a square `max(h, w)²` and keeps the
/// top-left `h × w`; computing only the window gives that in one pass. A full
/// resize is the window equal to the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResizeSpec {
    /// Interpolation kernel.
    pub mode: ResizeMode,
    /// PyTorch's `align_corners`.
    pub align_corners: bool,
    /// Input grid height.
    pub in_h: usize,
    /// Input grid width.
    pub in_w: usize,
    /// Height of the full resized grid.
    pub out_h: usize,
    /// Width of the full resized grid.
    pub out_w: usize,
    /// Rows kept from the top of the resized grid.
    pub window_h: usize,
    /// Columns kept from the left of the resized grid.
    pub window_w: usize,
}

impl ResizeSpec {
    /// A full resize (the window is the whole output).
    pub fn full(
        mode: ResizeMode,
        align_corners: bool,
        input: (usize, usize),
        output: (usize, usize),
    ) -> Self {
        Self {
            mode,
            align_corners,
            in_h: input.0,
            in_w: input.1,
            out_h: output.0,
            out_w: output.1,
            window_h: output.0,
            window_w: output.1,
        }
    }

    /// True when the window lies inside the output and no size is zero.
    pub fn is_valid(&self) -> bool {
        self.in_h > 0
            && self.in_w > 0
            && self.window_h > 0
            && self.window_w > 0
            && self.window_h <= self.out_h
            && self.window_w <= self.out_w
    }
}
