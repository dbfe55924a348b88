//! Any bytes through the json parser, then as a file of json lines (and in
//! `auto` mode) through a decoder with a small `max_line_bytes`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sidekick_fuzz::{decode_all, LogFormat};

fuzz_target!(|data: &[u8]| {
    let _ = sidekick_fuzz::json::parse(data);
    let _ = sidekick_fuzz::time::parse_rfc3339(data);
    let max = data.first().map_or(1, |b| usize::from(*b) + 1);
    decode_all(LogFormat::Json, None, max, data);
    decode_all(LogFormat::Auto, None, max, data);
});
