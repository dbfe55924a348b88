//! Log formats: turns the raw lines of one file into finished records —
//! CRI and docker json-file lines decoded and their partial lines joined,
//! JSON lines' time and level promoted, multiline records (stack traces)
//! joined — through one [`LineDecoder`] per file.
//!
//! The tailer splits lines and keeps positions; this module keeps what spans
//! lines (partial pieces, pending multiline records) and says how far the
//! file is accounted for ([`LineDecoder::committed_offset`]), so a
//! checkpoint never passes a line that is only buffered.
//!
//! The module is self-contained (it uses only `sidekick_pipeline`'s record
//! model and no other agent module beside the config bridge in this file):
//! the fuzz crate under `fuzz/` compiles the same files.

mod cri;
mod decoder;
mod docker;
mod json;
mod stream;
mod time;

#[cfg(test)]
mod tests;

pub use decoder::{LineDecoder, LogFormat, MultilineRules};
pub use stream::Stream;

use crate::config;

impl From<config::LogFormat> for LogFormat {
    fn from(f: config::LogFormat) -> Self {
        match f {
            config::LogFormat::Raw => LogFormat::Raw,
            config::LogFormat::Json => LogFormat::Json,
            config::LogFormat::Cri => LogFormat::Cri,
            config::LogFormat::Docker => LogFormat::Docker,
            config::LogFormat::Auto => LogFormat::Auto,
        }
    }
}

impl MultilineRules {
    /// The rules of a `multiline:` config block. `check` has made sure
    /// exactly one pattern is set and compiles; the start pattern wins if
    /// both are.
    pub fn from_config(m: &config::Multiline) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let rules = match (&m.start_pattern, &m.continue_pattern) {
            (Some(p), _) => MultilineRules::start_pattern(p)
                .with_context(|| format!("invalid multiline start_pattern {p:?}"))?,
            (None, Some(p)) => MultilineRules::continue_pattern(p)
                .with_context(|| format!("invalid multiline continue_pattern {p:?}"))?,
            (None, None) => anyhow::bail!("multiline needs start_pattern or continue_pattern"),
        };
        Ok(rules
            .max_lines(m.max_lines)
            .max_bytes(usize::try_from(m.max_bytes.0).unwrap_or(usize::MAX))
            .timeout(m.timeout))
    }
}
