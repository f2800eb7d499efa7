//! RGB to I420 (BT.601, limited range): what both media transports encode from. Done once per
//! rendered frame, on the render worker, only while a transport takes the session's frames.

/// The three planes of an I420 picture, packed one after the other (Y, then U, then V), with
/// chroma at half resolution rounded up.
#[derive(Debug, Clone)]
pub struct I420 {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl I420 {
    fn chroma_size(width: u32, height: u32) -> (usize, usize) {
        (width.div_ceil(2) as usize, height.div_ceil(2) as usize)
    }

    pub fn planes(&self) -> (&[u8], &[u8], &[u8]) {
        let luma = (self.width * self.height) as usize;
        let (cw, ch) = Self::chroma_size(self.width, self.height);
        let (y, chroma) = self.data.split_at(luma);
        let (u, v) = chroma.split_at(cw * ch);
        (y, u, v)
    }

    /// Converts packed RGB (3 bytes a pixel, rows without padding); `None` if `rgb` is too short.
    pub fn from_rgb(rgb: &[u8], width: u32, height: u32) -> Option<Self> {
        let (w, h) = (width as usize, height as usize);
        if w == 0 || h == 0 || rgb.len() < w * h * 3 {
            return None;
        }
        let (cw, ch) = Self::chroma_size(width, height);
        let mut data = vec![0u8; w * h + 2 * cw * ch];
        let (y_plane, chroma) = data.split_at_mut(w * h);
        let (u_plane, v_plane) = chroma.split_at_mut(cw * ch);
        for (row, y_row) in y_plane.chunks_exact_mut(w).enumerate() {
            let src = &rgb[row * w * 3..(row + 1) * w * 3];
            for (y, px) in y_row.iter_mut().zip(src.chunks_exact(3)) {
                let (r, g, b) = (px[0] as i32, px[1] as i32, px[2] as i32);
                *y = (((66 * r + 129 * g + 25 * b + 128) >> 8) + 16) as u8;
            }
        }
        // Chroma from the mean of each 2x2 block (clamped at the right and bottom edges).
        for cy in 0..ch {
            for cx in 0..cw {
                let (mut r, mut g, mut b) = (0i32, 0i32, 0i32);
                for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                    let (x, y) = ((2 * cx + dx).min(w - 1), (2 * cy + dy).min(h - 1));
                    let i = (y * w + x) * 3;
                    r += rgb[i] as i32;
                    g += rgb[i + 1] as i32;
                    b += rgb[i + 2] as i32;
                }
                let (r, g, b) = (r / 4, g / 4, b / 4);
                u_plane[cy * cw + cx] = (((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128) as u8;
                v_plane[cy * cw + cx] = (((112 * r - 94 * g - 18 * b + 128) >> 8) + 128) as u8;
            }
        }
        Some(Self {
            width,
            height,
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_known_colours() {
        // White, black, red, blue in a 2x2 picture: Y per pixel, one chroma sample for the block.
        let rgb = [255, 255, 255, 0, 0, 0, 255, 0, 0, 0, 0, 255];
        let pic = I420::from_rgb(&rgb, 2, 2).unwrap();
        let (y, u, v) = pic.planes();
        assert_eq!(y, &[235, 16, 82, 41]);
        assert_eq!((u.len(), v.len()), (1, 1));
        // The block's mean colour is (127, 63, 127): a purple, blue-ish and red-ish.
        assert!(u[0] > 128 && v[0] > 128, "{u:?} {v:?}");
    }

    #[test]
    fn odd_sizes_round_chroma_up_and_short_input_is_refused() {
        let pic = I420::from_rgb(&[128; 3 * 3 * 5], 3, 5).unwrap();
        let (y, u, v) = pic.planes();
        assert_eq!((y.len(), u.len(), v.len()), (15, 6, 6));
        assert!(u.iter().chain(v).all(|&c| c == 128));
        assert!(I420::from_rgb(&[0; 10], 2, 2).is_none());
    }
}
