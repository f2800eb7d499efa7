//! Sampling the base image: bilinear taps in fixed point, and the smooth step every warp fades
//! with.

#[inline]
pub(super) fn smooth(x: f32) -> f32 {
    let x = x.clamp(0.0, 1.0);
    x * x * (3.0 - 2.0 * x)
}

/// 1 up to `from`, fading smoothly to 0 at `to` (`from` < `to`).
#[inline]
pub(super) fn fade_out(v: f32, from: f32, to: f32) -> f32 {
    if v <= from {
        1.0
    } else {
        1.0 - smooth((v - from) / (to - from))
    }
}

/// One axis of a bilinear sample in fixed point: the two neighbours' byte offsets and the far
/// one's weight (0..=256).
#[derive(Clone, Copy)]
pub(super) struct Tap {
    pub(super) near: usize,
    pub(super) far: usize,
    pub(super) weight: u32,
}

impl Tap {
    /// The tap at `coord` on an axis of `len` pixels, `stride` bytes apart, clamped to its ends.
    #[inline]
    pub(super) fn at(coord: f32, len: usize, stride: usize) -> Self {
        let c = coord.clamp(0.0, (len - 1) as f32);
        let c0 = c as usize;
        let c1 = (c0 + 1).min(len - 1);
        Self {
            near: c0 * stride,
            far: c1 * stride,
            weight: ((c - c0 as f32) * 256.0) as u32,
        }
    }
}

/// Bilinear sample of `src` at the taps' point, in fixed point.
#[inline]
pub(super) fn blend(src: &[u8], x: Tap, y: Tap) -> [u8; 3] {
    let (wx, wy) = (x.weight, y.weight);
    let mut out = [0u8; 3];
    for (c, o) in out.iter_mut().enumerate() {
        let at = |row: usize, col: usize| src[row + col + c] as u32;
        let top = at(y.near, x.near) * (256 - wx) + at(y.near, x.far) * wx;
        let bottom = at(y.far, x.near) * (256 - wx) + at(y.far, x.far) * wx;
        *o = ((top * (256 - wy) + bottom * wy + (1 << 15)) >> 16) as u8;
    }
    out
}
