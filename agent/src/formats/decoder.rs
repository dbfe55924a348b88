//! [`LineDecoder`]: the raw lines of one file in, finished records out, in
//! two stages per stream (stdout and stderr kept apart, as CRI and docker
//! interleave them in one file):
//!
//! 1. the format: a line is parsed (cri, docker, json) and CRI `P` / docker
//!    partial pieces are joined into one logical line, bounded by
//!    `max_line_bytes`;
//! 2. multiline rules join logical lines into records, bounded by
//!    `max_lines` and `max_bytes`.
//!
//! Invariants:
//! - nothing is dropped: a line that fails to parse is shipped raw with
//!   `log.parse.error`; a record cut by a bound is shipped with
//!   `log.record.truncated=true` (only the rest of a joined CRI/docker line
//!   past `max_line_bytes` is skipped, as the tailer does for long lines);
//! - [`LineDecoder::committed_offset`] never passes the first byte of a line
//!   that is only buffered (a pending partial or multiline record);
//! - raw lines with no multiline rules take a path with no allocation and no
//!   regex; a body is a slice of the line unless pieces are joined.

use super::{cri, docker, json, Stream};
use bytes::{BufMut, Bytes, BytesMut};
use regex::bytes::Regex;
use sidekick_pipeline::{Attr, LogRecord, SourceMeta};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a CRI or docker partial line waits for its next piece when no
/// multiline timeout is configured.
pub const PARTIAL_TIMEOUT: Duration = Duration::from_secs(5);

const TRUNCATED: &str = "log.record.truncated";
const PARSE_ERROR: &str = "log.parse.error";
const IOSTREAM: &str = "log.iostream";

/// How a file's lines are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Each line is a record body as is.
    #[default]
    Raw,
    /// Each line is a JSON object; its time and level are promoted.
    Json,
    /// CRI (`TIME STREAM P|F MESSAGE`); partial lines joined.
    Cri,
    /// Docker json-file (`{"log":..,"stream":..,"time":..}`); partial lines joined.
    Docker,
    /// Detected from the file's first non-blank line, then kept.
    Auto,
}

/// A format decided for a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Raw,
    Json,
    Cri,
    Docker,
}

#[derive(Debug, Clone)]
enum Boundary {
    /// A matching line starts a new record.
    Start(Regex),
    /// A matching line continues the current record.
    Continue(Regex),
}

/// Rules that join several lines into one record (stack traces).
#[derive(Debug, Clone)]
pub struct MultilineRules {
    boundary: Boundary,
    max_lines: usize,
    max_bytes: usize,
    timeout: Duration,
}

impl MultilineRules {
    /// A line matching `pattern` starts a new record; other lines are
    /// appended to the current one. Defaults: 500 lines, 1 MiB, 1 s.
    pub fn start_pattern(pattern: &str) -> Result<Self, regex::Error> {
        Ok(Self::with(Boundary::Start(Regex::new(pattern)?)))
    }

    /// A line matching `pattern` is appended to the current record; other
    /// lines start a new one. Defaults: 500 lines, 1 MiB, 1 s.
    pub fn continue_pattern(pattern: &str) -> Result<Self, regex::Error> {
        Ok(Self::with(Boundary::Continue(Regex::new(pattern)?)))
    }

    fn with(boundary: Boundary) -> Self {
        MultilineRules {
            boundary,
            max_lines: 500,
            max_bytes: 1 << 20,
            timeout: Duration::from_secs(1),
        }
    }

    /// A record is cut (and flagged) once it holds this many lines; the
    /// following lines start a new record.
    pub fn max_lines(mut self, n: usize) -> Self {
        self.max_lines = n.max(1);
        self
    }

    /// A record is cut (and flagged) before a line would take it past this
    /// many bytes; that line starts a new record. (A single line is bounded
    /// by `max_line_bytes`, not by this.)
    pub fn max_bytes(mut self, n: usize) -> Self {
        self.max_bytes = n.max(1);
        self
    }

    /// A pending record is due for [`LineDecoder::flush_expired`] this long
    /// after its last line.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// Whether `body` begins a new record.
    fn starts_record(&self, body: &[u8]) -> bool {
        match &self.boundary {
            Boundary::Start(re) => re.is_match(body),
            Boundary::Continue(re) => !re.is_match(body),
        }
    }
}

/// Pieces being joined into one body; the first piece's record gives the
/// joined record its time, severity and attributes.
#[derive(Debug)]
struct Joined {
    rec: LogRecord,
    /// Allocated when a second piece arrives; until then the body is the
    /// first piece's zero-copy slice.
    buf: Option<BytesMut>,
    len: usize,
    lines: usize,
    /// Offset of the first byte of the first piece's line.
    hold: u64,
    truncated: bool,
}

impl Joined {
    fn new(rec: LogRecord, hold: u64) -> Self {
        Joined {
            len: rec.body.len(),
            truncated: is_truncated(&rec),
            rec,
            buf: None,
            lines: 1,
            hold,
        }
    }

    /// Appends `sep` (if any) and `piece`, keeping the body within `limit`
    /// bytes; returns false when the piece had to be cut.
    fn append(&mut self, sep: Option<u8>, piece: &[u8], limit: usize) -> bool {
        let room = limit.saturating_sub(self.len + usize::from(sep.is_some()));
        let take = piece.len().min(room);
        let need = self.len + usize::from(sep.is_some()) + take;
        let first = &self.rec.body;
        let buf = self.buf.get_or_insert_with(|| {
            let mut b = BytesMut::with_capacity((need * 2).min(limit.max(need)));
            b.extend_from_slice(first);
            b
        });
        if let Some(s) = sep {
            buf.put_u8(s);
        }
        buf.extend_from_slice(&piece[..take]);
        self.len = buf.len();
        self.lines += 1;
        let whole = take == piece.len();
        self.truncated |= !whole;
        whole
    }

    fn finish(mut self) -> LogRecord {
        if let Some(buf) = self.buf {
            self.rec.body = buf.freeze();
        }
        if self.truncated {
            mark_truncated(&mut self.rec);
        }
        self.rec
    }
}

/// What one stream (stdout or stderr) of a file holds between lines.
#[derive(Debug, Default)]
struct StreamState {
    /// A CRI `P` / docker partial line waiting for its next pieces.
    partial: Option<Joined>,
    /// The joined line went past `max_line_bytes` and was shipped cut: its
    /// remaining pieces are skipped up to its final piece.
    skipping: bool,
    /// A multiline record waiting for more lines.
    pending: Option<Joined>,
    /// When a line last went into `partial` or `pending`.
    touched: Option<Instant>,
}

/// The streams' states, allocated on first use: a raw file's decoder never
/// needs them (its lines pass straight through), and an idle file should
/// not carry them (they are most of a tailed file's memory).
#[derive(Debug, Default)]
struct Streams(Option<Box<[StreamState; 2]>>);

impl Streams {
    fn iter(&self) -> std::slice::Iter<'_, StreamState> {
        self.0.as_deref().map_or(&[][..], |s| &s[..]).iter()
    }

    fn iter_mut(&mut self) -> std::slice::IterMut<'_, StreamState> {
        match self.0.as_deref_mut() {
            Some(s) => s.iter_mut(),
            None => [].iter_mut(),
        }
    }

    /// Stream `i`'s state (by [`Stream::index`]), allocated if need be.
    fn get(&mut self, i: usize) -> &mut StreamState {
        &mut self.0.get_or_insert_with(Default::default)[i]
    }
}

impl StreamState {
    fn hold(&self) -> Option<u64> {
        let a = self.partial.as_ref().map(|j| j.hold);
        let b = self.pending.as_ref().map(|j| j.hold);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn is_pending(&self) -> bool {
        self.partial.is_some() || self.pending.is_some()
    }
}

/// Turns the raw lines of one file into finished records, statefully: CRI and
/// docker partial lines and multiline records span reads.
#[derive(Debug)]
pub struct LineDecoder {
    /// `None` while `Auto` has not seen a non-blank line.
    kind: Option<Kind>,
    multiline: Option<MultilineRules>,
    max_line_bytes: usize,
    source: Option<Arc<SourceMeta>>,
    /// Indexed by [`Stream::index`]; raw and json lines use stdout's.
    streams: Streams,
    /// End offset of the last line pushed (or skipped, or the start offset).
    last_end: u64,
}

impl LineDecoder {
    /// A decoder for one file. Call [`LineDecoder::starting_at`] with the
    /// offset the file is read from (default 0) and, to have records carry
    /// their file, [`LineDecoder::with_source`].
    pub fn new(
        format: LogFormat,
        multiline: Option<MultilineRules>,
        max_line_bytes: usize,
    ) -> Self {
        let kind = match format {
            LogFormat::Raw => Some(Kind::Raw),
            LogFormat::Json => Some(Kind::Json),
            LogFormat::Cri => Some(Kind::Cri),
            LogFormat::Docker => Some(Kind::Docker),
            LogFormat::Auto => None,
        };
        LineDecoder {
            kind,
            multiline,
            max_line_bytes: max_line_bytes.max(1),
            source: None,
            streams: Default::default(),
            last_end: 0,
        }
    }

    /// The file offset reading starts from: what [`committed_offset`]
    /// reports until a line is pushed.
    ///
    /// [`committed_offset`]: LineDecoder::committed_offset
    pub fn starting_at(mut self, offset: u64) -> Self {
        self.last_end = offset;
        self
    }

    /// Sets `source` on every record produced.
    pub fn with_source(mut self, source: Arc<SourceMeta>) -> Self {
        self.source = Some(source);
        self
    }

    /// Whether this decoder turns each line into one plain record and holds
    /// nothing back (raw, no multiline): a caller may skip it.
    pub fn is_passthrough(&self) -> bool {
        self.kind == Some(Kind::Raw) && self.multiline.is_none()
    }

    /// Feeds one line (without its newline; a trailing `\r` already
    /// trimmed) that ends at `end_offset` in the file (just past its
    /// newline); finished records are pushed to `out`.
    pub fn push(&mut self, line: Bytes, end_offset: u64, observed: u64, out: &mut Vec<LogRecord>) {
        self.push_line(line, false, end_offset, observed, out);
    }

    /// Like [`LineDecoder::push`], for the head of a line the caller cut at
    /// its own limit: the record it ends up in is flagged
    /// `log.record.truncated`. (Report the skipped rest with
    /// [`LineDecoder::skip_to`].)
    pub fn push_cut(
        &mut self,
        line: Bytes,
        end_offset: u64,
        observed: u64,
        out: &mut Vec<LogRecord>,
    ) {
        self.push_line(line, true, end_offset, observed, out);
    }

    /// Bytes up to `end_offset` were consumed without a line (the skipped
    /// rest of a cut line): they are accounted for once nothing is pending.
    pub fn skip_to(&mut self, end_offset: u64) {
        self.last_end = end_offset;
    }

    /// The file offset up to which every byte is accounted for in records
    /// already pushed to `out`: a pending partial or multiline record holds
    /// it at the start of its first line. Never above the last `end_offset`
    /// given.
    pub fn committed_offset(&self) -> u64 {
        self.streams
            .iter()
            .filter_map(StreamState::hold)
            .fold(self.last_end, u64::min)
    }

    /// When something pending is due for [`LineDecoder::flush_expired`]:
    /// the multiline `timeout` (or [`PARTIAL_TIMEOUT`] for a lone partial
    /// line) after the last line that went into it. `None` when nothing is
    /// pending.
    pub fn pending_deadline(&self) -> Option<Instant> {
        let timeout = self.timeout();
        self.streams
            .iter()
            .filter(|s| s.is_pending())
            .filter_map(|s| s.touched.map(|t| t + timeout))
            .min()
    }

    /// Flushes the streams whose deadline has passed at `now` (a stream
    /// still receiving lines keeps its pending record).
    pub fn flush_expired(&mut self, now: Instant, out: &mut Vec<LogRecord>) {
        let timeout = self.timeout();
        self.flush_where(out, |s| s.touched.is_none_or(|t| t + timeout <= now));
    }

    /// Flushes everything pending (shutdown, or the file is done): afterwards
    /// [`LineDecoder::committed_offset`] is the last `end_offset` given.
    pub fn flush(&mut self, out: &mut Vec<LogRecord>) {
        self.flush_where(out, |_| true);
        for s in self.streams.iter_mut() {
            // The skipped rest of a cut line ends here: a later piece starts
            // a line of its own.
            s.skipping = false;
        }
    }

    /// Flushes the pending streams `due` picks, the one read first first (so
    /// records keep the file's order).
    fn flush_where(&mut self, out: &mut Vec<LogRecord>, due: impl Fn(&StreamState) -> bool) {
        let mut order: Vec<(u64, usize)> = self
            .streams
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_pending() && due(s))
            .filter_map(|(i, s)| Some((s.hold()?, i)))
            .collect();
        order.sort_unstable();
        for (_, i) in order {
            self.flush_stream(i, out);
        }
    }

    /// The file was truncated (copytruncate) or is re-read from `offset`:
    /// flushes what is pending (it was read; the file no longer holds it)
    /// and continues from `offset`. The detected format is kept.
    pub fn rewind(&mut self, offset: u64, out: &mut Vec<LogRecord>) {
        self.flush(out);
        self.last_end = offset;
    }

    fn timeout(&self) -> Duration {
        self.multiline
            .as_ref()
            .map_or(PARTIAL_TIMEOUT, |m| m.timeout)
    }

    fn record(&self, body: Bytes, observed: u64) -> LogRecord {
        LogRecord {
            body,
            observed_time_unix_nano: observed,
            source: self.source.clone(),
            ..LogRecord::default()
        }
    }

    fn push_line(
        &mut self,
        line: Bytes,
        cut: bool,
        end_offset: u64,
        observed: u64,
        out: &mut Vec<LogRecord>,
    ) {
        let hold = self.last_end;
        self.last_end = end_offset;
        let kind = match self.kind {
            Some(k) => k,
            None => self.detect(&line),
        };
        if kind == Kind::Raw && self.multiline.is_none() {
            // The fast path: one record per line, nothing held.
            let mut rec = self.record(line, observed);
            if cut {
                mark_truncated(&mut rec);
            }
            out.push(rec);
            return;
        }
        match kind {
            Kind::Raw => {
                let rec = self.record(line, observed);
                self.logical(0, rec, cut, hold, out);
            }
            Kind::Json => {
                let mut rec = self.record(line, observed);
                match json::parse(&rec.body) {
                    Ok(meta) => {
                        rec.time_unix_nano = meta.time_unix_nano;
                        rec.severity_number = meta.severity_number;
                        rec.severity_text = meta.severity_text;
                    }
                    Err(reason) => rec.attributes.push(Attr::new(PARSE_ERROR, reason)),
                }
                self.logical(0, rec, cut, hold, out);
            }
            Kind::Cri => match cri::parse(&line) {
                Ok(c) => {
                    let mut rec = self.record(line.slice(c.message_start..), observed);
                    rec.time_unix_nano = c.time_unix_nano;
                    rec.attributes.push(Attr::new(IOSTREAM, c.stream.name()));
                    self.piece(c.stream.index(), rec, c.partial, cut, hold, out);
                }
                Err(reason) => self.unparsed(line, reason, cut, hold, observed, out),
            },
            Kind::Docker => match docker::parse(&line) {
                Ok(d) => {
                    let mut rec = self.record(d.message, observed);
                    rec.time_unix_nano = d.time_unix_nano;
                    if let Some(s) = d.stream {
                        rec.attributes.push(Attr::new(IOSTREAM, s.name()));
                    }
                    let stream = d.stream.map_or(0, Stream::index);
                    self.piece(stream, rec, d.partial, cut, hold, out);
                }
                Err(reason) => self.unparsed(line, reason, cut, hold, observed, out),
            },
        }
    }

    /// Decides an `Auto` file's format from its first non-blank line.
    fn detect(&mut self, line: &Bytes) -> Kind {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Kind::Raw;
        }
        let kind = if cri::parse(line).is_ok() {
            Kind::Cri
        } else if json::looks_like_object(line) {
            if docker::parse(line).is_ok() {
                Kind::Docker
            } else if json::parse(line).is_ok() {
                Kind::Json
            } else {
                Kind::Raw
            }
        } else {
            Kind::Raw
        };
        self.kind = Some(kind);
        kind
    }

    /// A line its format cannot read: shipped raw, with the reason.
    fn unparsed(
        &mut self,
        line: Bytes,
        reason: &'static str,
        cut: bool,
        hold: u64,
        observed: u64,
        out: &mut Vec<LogRecord>,
    ) {
        let mut rec = self.record(line, observed);
        rec.attributes.push(Attr::new(PARSE_ERROR, reason));
        self.logical(0, rec, cut, hold, out);
    }

    /// Stage 1: a CRI or docker piece; `partial` when the next piece of the
    /// same stream continues it.
    fn piece(
        &mut self,
        stream: usize,
        rec: LogRecord,
        partial: bool,
        cut: bool,
        hold: u64,
        out: &mut Vec<LogRecord>,
    ) {
        let max = self.max_line_bytes;
        let st = self.streams.get(stream);
        if st.skipping {
            // The rest of a logical line already shipped cut.
            st.skipping = partial;
            return;
        }
        let mut joined = match st.partial.take() {
            Some(mut j) => {
                if cut {
                    j.truncated = true;
                }
                j.append(None, &rec.body, max);
                j
            }
            None => {
                let mut j = Joined::new(rec, hold);
                j.truncated |= cut;
                if j.len > max {
                    j.rec.body.truncate(max);
                    j.len = max;
                    j.truncated = true;
                }
                j
            }
        };
        let full = joined.len >= max && partial;
        if partial && !full {
            st.partial = Some(joined);
            st.touched = Some(Instant::now());
            return;
        }
        if full {
            // More pieces will come: ship what fits, skip the rest of them.
            joined.truncated = true;
            st.skipping = true;
        }
        let hold = joined.hold;
        self.logical(stream, joined.finish(), false, hold, out);
    }

    /// Stage 2: a logical line, through the multiline rules if any.
    fn logical(
        &mut self,
        stream: usize,
        mut rec: LogRecord,
        cut: bool,
        hold: u64,
        out: &mut Vec<LogRecord>,
    ) {
        if cut {
            mark_truncated(&mut rec);
        }
        let Some(rules) = &self.multiline else {
            out.push(rec);
            return;
        };
        let st = self.streams.get(stream);
        st.touched = Some(Instant::now());
        let Some(mut pending) = st.pending.take() else {
            st.pending = Some(Joined::new(rec, hold));
            return;
        };
        let fits =
            pending.lines < rules.max_lines && pending.len + 1 + rec.body.len() <= rules.max_bytes;
        if rules.starts_record(&rec.body) {
            out.push(pending.finish());
        } else if fits {
            pending.truncated |= is_truncated(&rec);
            pending.append(Some(b'\n'), &rec.body, usize::MAX);
            st.pending = Some(pending);
            return;
        } else {
            // Cut: this line goes on in a new record.
            pending.truncated = true;
            out.push(pending.finish());
        }
        st.pending = Some(Joined::new(rec, hold));
    }

    fn flush_stream(&mut self, stream: usize, out: &mut Vec<LogRecord>) {
        // A partial line whose next piece never came: shipped as it is, and a
        // later piece will start a line of its own.
        if let Some(j) = self.streams.get(stream).partial.take() {
            let hold = j.hold;
            self.logical(stream, j.finish(), false, hold, out);
        }
        let st = self.streams.get(stream);
        if let Some(p) = st.pending.take() {
            out.push(p.finish());
        }
        st.touched = None;
    }
}

fn is_truncated(rec: &LogRecord) -> bool {
    rec.attributes.iter().any(|a| a.key == TRUNCATED)
}

fn mark_truncated(rec: &mut LogRecord) {
    if !is_truncated(rec) {
        rec.attributes.push(Attr::new(TRUNCATED, true));
    }
}
