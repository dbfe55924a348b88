//! Any bytes through the docker parser, then as a file of docker lines (and in
//! `auto` mode) through a decoder with a small `max_line_bytes`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sidekick_fuzz::{decode_all, LogFormat};

fuzz_target!(|data: &[u8]| {
    let _ = sidekick_fuzz::docker::parse(&bytes::Bytes::copy_from_slice(data));
    let max = data.first().map_or(1, |b| usize::from(*b) + 1);
    decode_all(LogFormat::Docker, None, max, data);
    decode_all(LogFormat::Auto, None, max, data);
});
