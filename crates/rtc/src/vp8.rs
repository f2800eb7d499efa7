//! VP8 through libvpx (Debian `libvpx-dev`, bindings from `env-libvpx-sys`), configured the way WebRTC's own
//! libvpx wrapper configures it for real time: one pass, CBR, no lag, one thread, keyframes on request.
//! `vpx-encode` hard-codes 8 threads and cannot force a keyframe, hence the direct FFI.
//!
//! Each codec context is owned by exactly one Rust value whose `Drop` destroys it; the number alive is
//! counted ([`live_codec_contexts`]) so a leak shows in metrics.

use std::ffi::CStr;
use std::mem::MaybeUninit;
use std::os::raw::{c_int, c_uint, c_ulong};
use std::ptr;
use std::sync::atomic::{AtomicI64, Ordering};

use vpx_sys as vpx;

use crate::RtcError;

static LIVE_CONTEXTS: AtomicI64 = AtomicI64::new(0);

/// libvpx encoder and decoder contexts currently alive in this process.
pub fn live_codec_contexts() -> i64 {
    LIVE_CONTEXTS.load(Ordering::Relaxed)
}

#[cfg(test)]
thread_local! {
    /// The same count for contexts made and dropped on this thread: tests running side by side
    /// each see their own.
    static THREAD_CONTEXTS: std::cell::Cell<i64> = const { std::cell::Cell::new(0) };
}

fn count_context(delta: i64) {
    LIVE_CONTEXTS.fetch_add(delta, Ordering::Relaxed);
    #[cfg(test)]
    THREAD_CONTEXTS.with(|c| c.set(c.get() + delta));
}

/// The RTP clock of video: encoder timestamps are RTP ticks, so rate control sees real frame spacing.
const TIMEBASE_HZ: i32 = 90_000;

/// One compressed VP8 frame.
#[derive(Debug, Clone)]
pub struct EncodedVideoFrame {
    pub data: Vec<u8>,
    pub keyframe: bool,
}

/// A realtime CBR VP8 encoder for one picture size.
pub struct Vp8Encoder {
    // Boxed: libvpx keeps pointers into the context, so it must not move after init.
    ctx: Box<vpx::vpx_codec_ctx_t>,
    width: u32,
    height: u32,
    frame_ticks: u64,
}

// SAFETY: a libvpx context has no thread affinity; it is only ever used through `&mut self`, so from one
// thread at a time.
unsafe impl Send for Vp8Encoder {}

/// Sizes of the three planes of an I420 picture.
pub fn i420_plane_sizes(width: u32, height: u32) -> (usize, usize) {
    let (w, h) = (width as usize, height as usize);
    (w * h, w.div_ceil(2) * h.div_ceil(2))
}

impl Vp8Encoder {
    /// `width`×`height` at `fps`, `bitrate_bps` average (CBR). 16..=4096 pixels a side.
    pub fn new(width: u32, height: u32, fps: u32, bitrate_bps: u32) -> Result<Self, RtcError> {
        if !(16..=4096).contains(&width) || !(16..=4096).contains(&height) {
            return Err(RtcError::InvalidSession(format!(
                "a picture of {width}x{height} cannot be encoded; each side must be 16 to 4096 pixels"
            )));
        }
        if !(1..=120).contains(&fps) {
            return Err(RtcError::InvalidSession(format!(
                "{fps} frames a second is out of range 1..=120"
            )));
        }
        if !(50_000..=20_000_000).contains(&bitrate_bps) {
            return Err(RtcError::InvalidSession(format!(
                "a video bitrate of {bitrate_bps} bit/s is out of range 50 kbit/s..20 Mbit/s"
            )));
        }
        // SAFETY: the config is plain data filled by libvpx; the iface pointer is static.
        unsafe {
            let iface = vpx::vpx_codec_vp8_cx();
            let mut cfg = MaybeUninit::<vpx::vpx_codec_enc_cfg_t>::zeroed();
            check(
                vpx::vpx_codec_enc_config_default(iface, cfg.as_mut_ptr(), 0),
                "vpx_codec_enc_config_default",
            )?;
            let mut cfg = cfg.assume_init();
            cfg.g_w = width;
            cfg.g_h = height;
            cfg.g_threads = 1; // two threads were slower than one on 2 cores (DEPENDENCIES.md)
            cfg.g_timebase = vpx::vpx_rational {
                num: 1,
                den: TIMEBASE_HZ,
            };
            cfg.g_lag_in_frames = 0;
            cfg.g_error_resilient = 0;
            cfg.g_pass = vpx::vpx_enc_pass::VPX_RC_ONE_PASS;
            cfg.rc_end_usage = vpx::vpx_rc_mode::VPX_CBR;
            cfg.rc_target_bitrate = bitrate_bps / 1000;
            cfg.rc_min_quantizer = 2;
            cfg.rc_max_quantizer = 56;
            cfg.rc_undershoot_pct = 100;
            cfg.rc_overshoot_pct = 15;
            cfg.rc_buf_initial_sz = 500;
            cfg.rc_buf_optimal_sz = 600;
            cfg.rc_buf_sz = 1000;
            // A dropped frame would be a gap every viewer sees; the session drops frames itself when late.
            cfg.rc_dropframe_thresh = 0;
            cfg.rc_resize_allowed = 0;
            cfg.kf_mode = vpx::vpx_kf_mode::VPX_KF_AUTO;
            // Keyframes come on request (new viewer, PLI, FIR); a periodic one only bounds a lost request.
            cfg.kf_max_dist = fps * 10;

            let mut ctx: Box<vpx::vpx_codec_ctx_t> = Box::new(MaybeUninit::zeroed().assume_init());
            check(
                vpx::vpx_codec_enc_init_ver(
                    &mut *ctx,
                    iface,
                    &cfg,
                    0,
                    vpx::VPX_ENCODER_ABI_VERSION as c_int,
                ),
                "vpx_codec_enc_init",
            )?;
            count_context(1);
            let mut enc = Vp8Encoder {
                ctx,
                width,
                height,
                frame_ticks: (TIMEBASE_HZ as u32 / fps) as u64,
            };
            // Keyframe size cap as WebRTC computes it: optimal buffer (600 ms) * 0.5 * fps / 10, in % of a
            // mean frame; an uncapped keyframe is a burst that late-joining viewers feel as a stall.
            let max_intra_pct = (600 * fps / 20).max(300);
            let controls = [
                (vpx::vp8e_enc_control_id::VP8E_SET_CPUUSED as c_int, -6),
                (
                    vpx::vp8e_enc_control_id::VP8E_SET_NOISE_SENSITIVITY as c_int,
                    0,
                ),
                (
                    vpx::vp8e_enc_control_id::VP8E_SET_STATIC_THRESHOLD as c_int,
                    1,
                ),
                (
                    vpx::vp8e_enc_control_id::VP8E_SET_TOKEN_PARTITIONS as c_int,
                    0,
                ),
                (
                    vpx::vp8e_enc_control_id::VP8E_SET_MAX_INTRA_BITRATE_PCT as c_int,
                    max_intra_pct as c_int,
                ),
            ];
            for (id, value) in controls {
                check(
                    vpx::vpx_codec_control_(&mut *enc.ctx, id, value as c_int),
                    "vpx_codec_control",
                )?;
            }
            Ok(enc)
        }
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    /// Encodes one I420 picture (tight strides: `width` and `(width+1)/2`) taken at `rtp_time` (90 kHz).
    /// `None` when libvpx produced no frame.
    pub fn encode(
        &mut self,
        y: &[u8],
        u: &[u8],
        v: &[u8],
        rtp_time: u64,
        force_keyframe: bool,
    ) -> Result<Option<EncodedVideoFrame>, RtcError> {
        let (luma, chroma) = i420_plane_sizes(self.width, self.height);
        if y.len() < luma || u.len() < chroma || v.len() < chroma {
            return Err(RtcError::InvalidFrame(format!(
                "I420 planes of {}/{}/{} bytes are too small for {}x{} (need {luma}/{chroma}/{chroma})",
                y.len(),
                u.len(),
                v.len(),
                self.width,
                self.height
            )));
        }
        let chroma_stride = self.width.div_ceil(2) as c_int;
        // SAFETY: the image only describes our planes (checked above to be large enough); libvpx reads them
        // during vpx_codec_encode and keeps no reference (lag_in_frames = 0). Packets returned by
        // get_cx_data stay valid until the next encode call and are copied out before it.
        unsafe {
            let mut img = MaybeUninit::<vpx::vpx_image_t>::zeroed();
            let wrapped = vpx::vpx_img_wrap(
                img.as_mut_ptr(),
                vpx::vpx_img_fmt::VPX_IMG_FMT_I420,
                self.width as c_uint,
                self.height as c_uint,
                1,
                y.as_ptr() as *mut u8,
            );
            if wrapped.is_null() {
                return Err(RtcError::Codec("vpx_img_wrap refused the picture".into()));
            }
            let mut img = img.assume_init();
            img.planes[0] = y.as_ptr() as *mut u8;
            img.planes[1] = u.as_ptr() as *mut u8;
            img.planes[2] = v.as_ptr() as *mut u8;
            img.stride[0] = self.width as c_int;
            img.stride[1] = chroma_stride;
            img.stride[2] = chroma_stride;

            let flags = if force_keyframe {
                vpx::VPX_EFLAG_FORCE_KF as vpx::vpx_enc_frame_flags_t
            } else {
                0
            };
            check(
                vpx::vpx_codec_encode(
                    &mut *self.ctx,
                    &img,
                    rtp_time as vpx::vpx_codec_pts_t,
                    self.frame_ticks as c_ulong,
                    flags,
                    vpx::VPX_DL_REALTIME as c_ulong,
                ),
                "vpx_codec_encode",
            )
            .map_err(|e| self.with_detail(e))?;

            let mut out: Option<EncodedVideoFrame> = None;
            let mut iter: vpx::vpx_codec_iter_t = ptr::null();
            loop {
                let pkt = vpx::vpx_codec_get_cx_data(&mut *self.ctx, &mut iter);
                if pkt.is_null() {
                    break;
                }
                if (*pkt).kind != vpx::vpx_codec_cx_pkt_kind::VPX_CODEC_CX_FRAME_PKT {
                    continue;
                }
                let frame = (*pkt).data.frame;
                let bytes = std::slice::from_raw_parts(frame.buf as *const u8, frame.sz as usize);
                let keyframe = frame.flags & vpx::VPX_FRAME_IS_KEY != 0;
                // With one token partition libvpx emits one packet per frame; append defensively anyway.
                match out.as_mut() {
                    Some(f) => {
                        f.data.extend_from_slice(bytes);
                        f.keyframe |= keyframe;
                    }
                    None => {
                        out = Some(EncodedVideoFrame {
                            data: bytes.to_vec(),
                            keyframe,
                        })
                    }
                }
            }
            Ok(out)
        }
    }

    fn with_detail(&mut self, e: RtcError) -> RtcError {
        // SAFETY: the context is initialised; the returned string is owned by libvpx (or null).
        let detail = unsafe { vpx::vpx_codec_error_detail(&mut *self.ctx) };
        if detail.is_null() {
            return e;
        }
        // SAFETY: non-null, NUL-terminated C string from libvpx.
        let detail = unsafe { CStr::from_ptr(detail) }.to_string_lossy();
        RtcError::Codec(format!("{e} ({detail})"))
    }
}

impl Drop for Vp8Encoder {
    fn drop(&mut self) {
        // SAFETY: initialised in new(), destroyed exactly once here.
        unsafe { vpx::vpx_codec_destroy(&mut *self.ctx) };
        count_context(-1);
    }
}

/// A decoded I420 picture with tight strides.
#[derive(Debug, Clone)]
pub struct DecodedFrame {
    pub width: u32,
    pub height: u32,
    pub y: Vec<u8>,
    pub u: Vec<u8>,
    pub v: Vec<u8>,
}

impl DecodedFrame {
    /// Mean of the luma plane: what tests compare to see a pattern change.
    pub fn mean_luma(&self) -> f64 {
        self.y.iter().map(|&p| p as u64).sum::<u64>() as f64 / self.y.len().max(1) as f64
    }
}

/// The libvpx VP8 decoder: what a browser runs, used by tests and the benchmark as the receiving end.
pub struct Vp8Decoder {
    ctx: Box<vpx::vpx_codec_ctx_t>,
}

// SAFETY: as for the encoder, the context is used only through `&mut self`.
unsafe impl Send for Vp8Decoder {}

impl Vp8Decoder {
    pub fn new() -> Result<Self, RtcError> {
        // SAFETY: a zeroed context is what vpx_codec_dec_init expects; the iface pointer is static.
        unsafe {
            let mut ctx: Box<vpx::vpx_codec_ctx_t> = Box::new(MaybeUninit::zeroed().assume_init());
            let cfg = vpx::vpx_codec_dec_cfg_t {
                threads: 1,
                w: 0,
                h: 0,
            };
            check(
                vpx::vpx_codec_dec_init_ver(
                    &mut *ctx,
                    vpx::vpx_codec_vp8_dx(),
                    &cfg,
                    0,
                    vpx::VPX_DECODER_ABI_VERSION as c_int,
                ),
                "vpx_codec_dec_init",
            )?;
            count_context(1);
            Ok(Vp8Decoder { ctx })
        }
    }

    /// Decodes one complete VP8 frame; `None` if the decoder produced no picture.
    pub fn decode(&mut self, data: &[u8]) -> Result<Option<DecodedFrame>, RtcError> {
        if data.is_empty() {
            return Err(RtcError::Codec("empty VP8 frame".into()));
        }
        // SAFETY: data is a valid slice for the call; the returned image is valid until the next decode and
        // its planes are copied out row by row within their strides.
        unsafe {
            check(
                vpx::vpx_codec_decode(
                    &mut *self.ctx,
                    data.as_ptr(),
                    data.len() as c_uint,
                    ptr::null_mut(),
                    0,
                ),
                "vpx_codec_decode",
            )?;
            let mut iter: vpx::vpx_codec_iter_t = ptr::null();
            let img = vpx::vpx_codec_get_frame(&mut *self.ctx, &mut iter);
            if img.is_null() {
                return Ok(None);
            }
            let img = &*img;
            let (w, h) = (img.d_w as usize, img.d_h as usize);
            let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
            let copy = |plane: usize, pw: usize, ph: usize| {
                let stride = img.stride[plane] as usize;
                let mut out = Vec::with_capacity(pw * ph);
                for row in 0..ph {
                    let start = img.planes[plane].add(row * stride);
                    out.extend_from_slice(std::slice::from_raw_parts(start, pw));
                }
                out
            };
            Ok(Some(DecodedFrame {
                width: img.d_w,
                height: img.d_h,
                y: copy(0, w, h),
                u: copy(1, cw, ch),
                v: copy(2, cw, ch),
            }))
        }
    }
}

impl Drop for Vp8Decoder {
    fn drop(&mut self) {
        // SAFETY: initialised in new(), destroyed exactly once here.
        unsafe { vpx::vpx_codec_destroy(&mut *self.ctx) };
        count_context(-1);
    }
}

fn check(err: vpx::vpx_codec_err_t, what: &str) -> Result<(), RtcError> {
    if err == vpx::vpx_codec_err_t::VPX_CODEC_OK {
        return Ok(());
    }
    // SAFETY: vpx_codec_err_to_string returns a static string for every code.
    let msg = unsafe { CStr::from_ptr(vpx::vpx_codec_err_to_string(err)) }.to_string_lossy();
    Err(RtcError::Codec(format!("{what} failed: {msg}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A picture whose luma is a diagonal gradient shifted by `t` plus a flat square of brightness `level`.
    pub(crate) fn pattern(w: u32, h: u32, t: u32, level: u8) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let (luma, chroma) = i420_plane_sizes(w, h);
        let mut y = vec![0u8; luma];
        for row in 0..h {
            for col in 0..w {
                let i = (row * w + col) as usize;
                y[i] = if row < h / 2 && col < w / 2 {
                    level
                } else {
                    ((row + col + t) % 200) as u8 + 20
                };
            }
        }
        (y, vec![128u8; chroma], vec![128u8; chroma])
    }

    fn mean(p: &[u8]) -> f64 {
        p.iter().map(|&x| x as f64).sum::<f64>() / p.len() as f64
    }

    fn thread_contexts() -> i64 {
        THREAD_CONTEXTS.with(|c| c.get())
    }

    #[test]
    fn encodes_and_decodes_with_keyframes_on_request() {
        let before = thread_contexts();
        let (w, h) = (128, 96);
        let mut enc = Vp8Encoder::new(w, h, 25, 300_000).unwrap();
        let mut dec = Vp8Decoder::new().unwrap();
        assert_eq!(thread_contexts(), before + 2);
        let mut keyframes = Vec::new();
        for i in 0..30u32 {
            let level = if i < 15 { 40 } else { 220 };
            let (y, u, v) = pattern(w, h, i, level);
            let frame = enc
                .encode(&y, &u, &v, i as u64 * 3600, i == 20)
                .unwrap()
                .expect("realtime CBR without frame dropping emits every frame");
            keyframes.push(frame.keyframe);
            let pic = dec.decode(&frame.data).unwrap().unwrap();
            assert_eq!((pic.width, pic.height), (w, h));
            // The flat square's brightness comes through the codec.
            let square: Vec<u8> = (0..h / 2)
                .flat_map(|r| pic.y[(r * w) as usize..(r * w + w / 2) as usize].to_vec())
                .collect();
            let got = mean(&square);
            if !(14..=16).contains(&i) {
                assert!(
                    (got - level as f64).abs() < 12.0,
                    "frame {i}: {got} vs {level}"
                );
            }
        }
        assert!(keyframes[0], "the first frame is a keyframe");
        assert!(keyframes[20], "a forced keyframe");
        assert!(!keyframes[1..20].iter().any(|&k| k), "no keyframes unasked");
        drop((enc, dec));
        assert_eq!(thread_contexts(), before);
    }

    #[test]
    fn rejects_bad_parameters_and_short_planes() {
        assert!(Vp8Encoder::new(8, 8, 25, 500_000).is_err());
        assert!(Vp8Encoder::new(64, 64, 0, 500_000).is_err());
        assert!(Vp8Encoder::new(64, 64, 25, 10).is_err());
        let mut enc = Vp8Encoder::new(64, 64, 25, 300_000).unwrap();
        let err = enc
            .encode(&[0; 10], &[0; 10], &[0; 10], 0, false)
            .unwrap_err();
        assert!(err.to_string().contains("too small"), "{err}");
    }

    #[test]
    fn odd_sizes_round_trip() {
        let (w, h) = (101, 77);
        let mut enc = Vp8Encoder::new(w, h, 25, 300_000).unwrap();
        let mut dec = Vp8Decoder::new().unwrap();
        let (y, u, v) = pattern(w, h, 0, 100);
        let f = enc.encode(&y, &u, &v, 0, false).unwrap().unwrap();
        let pic = dec.decode(&f.data).unwrap().unwrap();
        assert_eq!((pic.width, pic.height), (w, h));
        assert_eq!(pic.u.len(), 51 * 39);
    }

    #[test]
    fn decoder_rejects_garbage() {
        let mut dec = Vp8Decoder::new().unwrap();
        assert!(dec.decode(&[]).is_err());
        assert!(dec.decode(&[1, 2, 3, 4, 5]).is_err());
    }
}
