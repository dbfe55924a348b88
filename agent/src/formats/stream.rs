//! The output stream of a container a CRI or docker line came from.

/// stdout or stderr: their partial lines and multiline records are joined
/// apart, since the runtime interleaves both streams in one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The container's stdout.
    Stdout,
    /// The container's stderr.
    Stderr,
}

impl Stream {
    /// The `log.iostream` attribute value.
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    /// Index of the stream's decoder state (stdout also serves raw and json).
    pub fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}
