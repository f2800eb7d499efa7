//! One str0m call on a viewer's `Rtc`, with its panics caught.

use std::panic::{catch_unwind, AssertUnwindSafe};

use str0m::Rtc;

/// Runs one str0m call on a viewer's `Rtc`. str0m is fail-fast: an unforeseen state panics. The I/O
/// thread serves every viewer of every session, so a panic costs only the viewer it happened in: its `Rtc`
/// is disconnected (no polite close from an inconsistent state) and the viewer is closed.
pub(super) fn guarded<T>(
    rtc: &mut Rtc,
    f: impl FnOnce(&mut Rtc) -> Result<T, str0m::RtcError>,
) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(|| f(rtc))) {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => {
            rtc.disconnect();
            Err("str0m panicked".to_string())
        }
    }
}
