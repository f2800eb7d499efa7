//! JPEG encoding of preview frames (`jpeg-encoder`, AVX2 when the CPU has it: about four times
//! `image`'s encoder here).

use super::MediaError;

/// Encodes `rgb` (`width`×`height`×3) at `quality` (1..100).
pub fn encode(rgb: &[u8], width: usize, height: usize, quality: u8) -> Result<Vec<u8>, MediaError> {
    let (w, h) = (
        u16::try_from(width).map_err(|_| MediaError::Model("frame too wide".into()))?,
        u16::try_from(height).map_err(|_| MediaError::Model("frame too tall".into()))?,
    );
    let mut out = Vec::with_capacity(width * height / 4);
    jpeg_encoder::Encoder::new(&mut out, quality.clamp(1, 100))
        .encode(rgb, w, h, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| MediaError::Model(format!("JPEG encoding failed: {e}")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trips_through_a_decoder() {
        let rgb: Vec<u8> = (0..64 * 48 * 3).map(|i| (i % 251) as u8).collect();
        let jpeg = super::encode(&rgb, 64, 48, 85).unwrap();
        let decoded = image::load_from_memory(&jpeg).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (64, 48));
        assert!(super::encode(&rgb, 64, 100, 85).is_err());
    }
}
