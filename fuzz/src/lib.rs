//! The agent's log format parsers (`agent/src/formats`), compiled from the
//! very same files for fuzzing: the agent is a binary crate, so the fuzz
//! targets cannot link it. The files only use `super::` for each other and
//! `sidekick_pipeline` for the record model; `formats/mod.rs` (the config
//! bridge) is left out.
#![forbid(unsafe_code)]

#[path = "../../agent/src/formats/cri.rs"]
pub mod cri;
#[path = "../../agent/src/formats/decoder.rs"]
pub mod decoder;
#[path = "../../agent/src/formats/docker.rs"]
pub mod docker;
#[path = "../../agent/src/formats/json.rs"]
pub mod json;
#[path = "../../agent/src/formats/stream.rs"]
pub mod stream;
#[path = "../../agent/src/formats/time.rs"]
pub mod time;

pub use decoder::{LineDecoder, LogFormat, MultilineRules};
pub use stream::Stream;

use bytes::Bytes;
use std::time::{Duration, Instant};

/// Feeds `data` split at newlines (as the tailer does) through a decoder and
/// checks what must hold for any input: no panic, the committed offset never
/// passes the last line given nor goes back, and after a flush it is there
/// with nothing pending.
pub fn decode_all(
    format: LogFormat,
    rules: Option<MultilineRules>,
    max_line_bytes: usize,
    data: &[u8],
) {
    let mut dec = LineDecoder::new(format, rules, max_line_bytes);
    let data = Bytes::copy_from_slice(data);
    let mut out = Vec::new();
    let mut from = 0;
    let mut committed = 0;
    for (i, nl) in memchr::memchr_iter(b'\n', &data).enumerate() {
        let end = nl as u64 + 1;
        dec.push(data.slice(from..nl), end, 1, &mut out);
        let now = dec.committed_offset();
        assert!(
            now <= end && now >= committed,
            "{committed} -> {now} (end {end})"
        );
        committed = now;
        if i % 7 == 6 {
            dec.flush_expired(Instant::now() + Duration::from_secs(3600), &mut out);
            assert_eq!(dec.committed_offset(), end);
        }
        from = nl + 1;
    }
    let end = from as u64;
    dec.flush(&mut out);
    assert_eq!(dec.committed_offset(), end);
    assert!(dec.pending_deadline().is_none());
}
