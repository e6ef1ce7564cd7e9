//! File line numbers of CSV records, for LF, CRLF and CR files alike.
//!
//! The csv crate's `Position::line` counts the `\n` read before a record, but
//! after a CRLF terminator the next record's position is taken at its `\n`,
//! so in CRLF files (Excel exports) every record's line is one too low, and
//! blank lines shift it further. [`LineTracker`] counts the lines of the
//! bytes the csv reader reads and maps a record's byte offset to its line.

use std::collections::VecDeque;
use std::io::Read;

/// A reader that passes bytes through and remembers where lines with content
/// start. Line terminators: `\n`, `\r\n`, a lone `\r` (as the csv crate's).
pub struct LineTracker<R> {
    inner: R,
    offset: u64,
    line: u64,
    prev_cr: bool,
    at_line_start: bool,
    /// (byte offset, 1-based line) of each line start followed by content,
    /// not yet asked for.
    starts: VecDeque<(u64, u64)>,
}

impl<R: Read> LineTracker<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            offset: 0,
            line: 1,
            prev_cr: false,
            at_line_start: true,
            starts: VecDeque::new(),
        }
    }

    /// The 1-based file line of the record the csv reader placed at `pos`
    /// (the header is line 1). A record starts at the first content byte at
    /// or after `pos.byte()` (before it lie only terminators), which begins a
    /// line. Ask in increasing byte order: lines before `pos` are forgotten.
    pub fn line_of(&mut self, pos: Option<&csv::Position>) -> u64 {
        let Some(pos) = pos else { return 0 };
        while self.starts.front().is_some_and(|&(o, _)| o < pos.byte()) {
            self.starts.pop_front();
        }
        self.starts.front().map_or(pos.line(), |&(_, l)| l)
    }
}

impl<R: Read> Read for LineTracker<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        for &c in &buf[..n] {
            let terminator = c == b'\n' || c == b'\r';
            if self.at_line_start && !terminator {
                self.starts.push_back((self.offset, self.line));
            }
            if c == b'\r' || (c == b'\n' && !self.prev_cr) {
                self.line += 1;
            }
            self.at_line_start = terminator;
            self.prev_cr = c == b'\r';
            self.offset += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The line of every record, with each line ending, blank lines, a quoted
    /// field over two lines and a byte-order mark.
    #[test]
    fn record_lines_for_every_line_ending() {
        let body = ["\u{feff}a,b", "1,2", "", "\"x", "y\",3", "4,5"];
        // Lines: header 1, "1,2" 2, blank 3, quoted record 4-5, "4,5" 6.
        for eol in ["\n", "\r\n", "\r"] {
            let text = body.join(eol) + eol;
            let mut r = csv::Reader::from_reader(LineTracker::new(text.as_bytes()));
            r.headers().unwrap();
            let mut rec = csv::StringRecord::new();
            let mut lines = Vec::new();
            while r.read_record(&mut rec).unwrap() {
                let pos = rec.position().cloned();
                lines.push(r.get_mut().line_of(pos.as_ref()));
            }
            assert_eq!(lines, [2, 4, 6], "line ending {eol:?}");
        }
    }
}
