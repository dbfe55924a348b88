//! Multiline rules over any lines: the first byte picks the rules and the
//! format (raw, or cri so partial joins feed the rules), the rest is the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sidekick_fuzz::{decode_all, LogFormat, MultilineRules};
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    let Some((&knob, file)) = data.split_first() else {
        return;
    };
    // Compiled once: a regex build per input would be most of the run.
    static RULES: OnceLock<Option<(MultilineRules, MultilineRules)>> = OnceLock::new();
    let Some((start, cont)) = RULES.get_or_init(|| {
        Some((
            MultilineRules::start_pattern(r"^\d{4}-|^\S").ok()?,
            MultilineRules::continue_pattern(r"^\s+at |^Caused by:|^\s+\.\.\. |^\s").ok()?,
        ))
    }) else {
        return;
    };
    let rules = if knob & 1 == 0 { start } else { cont }.clone();
    let rules = rules
        .max_lines(usize::from(knob >> 4) + 1)
        .max_bytes(usize::from(knob) * 4 + 1);
    let format = if knob & 2 == 0 {
        LogFormat::Raw
    } else {
        LogFormat::Cri
    };
    decode_all(format, Some(rules), usize::from(knob >> 2) + 1, file);
});
