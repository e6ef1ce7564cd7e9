//! Progress of long work on stderr: on a terminal an indicatif bar with
//! ETA; otherwise (a log file, a pipe, CI) a plain line at most every
//! [`log_interval`] (60 s unless `GEOSSL_PROGRESS_SECS` says otherwise), so
//! logs show that a long run moves without filling with redraws, and
//! carry no cursor movement or colour codes.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};

/// Seconds between two plain progress lines when stderr is not a terminal
/// (`GEOSSL_PROGRESS_SECS`; default 60; 0 writes one at every update).
pub fn log_interval() -> Duration {
    let secs = std::env::var("GEOSSL_PROGRESS_SECS")
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .unwrap_or(60.0);
    Duration::from_secs_f64(secs)
}

/// A bar counting `len` items of work, labelled `what` (see the module
/// documentation for where it is drawn).
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ETA {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar
    } else {
        let lines = LogLines::new(Box::new(std::io::stderr()), log_interval());
        let bar = ProgressBar::with_draw_target(
            Some(len),
            ProgressDrawTarget::term_like(Box::new(lines)),
        );
        bar.set_style(
            ProgressStyle::with_template(
                "{msg}: {pos}/{len} ({percent}%), {elapsed} elapsed, ETA {eta}",
            )
            .expect("valid template"),
        );
        bar
    };
    bar.set_message(what.to_string());
    bar
}

/// [`bar`], or a hidden one when `quiet`.
pub fn bar_unless(quiet: bool, len: u64, what: &str) -> ProgressBar {
    if quiet {
        ProgressBar::hidden()
    } else {
        bar(len, what)
    }
}

/// An indicatif draw target that turns redraws into plain lines, one at
/// most every `interval` (the first once `interval` has passed since the
/// bar was made, so short work prints nothing); cursor movement and
/// clearing are ignored.
struct LogLines {
    state: Mutex<LogState>,
    interval: Duration,
}

struct LogState {
    out: Box<dyn Write + Send>,
    /// What the current redraw wrote so far.
    pending: String,
    last: Instant,
}

impl LogLines {
    fn new(out: Box<dyn Write + Send>, interval: Duration) -> Self {
        Self {
            state: Mutex::new(LogState {
                out,
                pending: String::new(),
                last: Instant::now(),
            }),
            interval,
        }
    }
}

impl std::fmt::Debug for LogLines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogLines")
            .field("interval", &self.interval)
            .finish()
    }
}

impl TermLike for LogLines {
    fn width(&self) -> u16 {
        // Wide enough that indicatif never wraps or truncates a line.
        500
    }
    fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.pending.push_str(s);
        st.pending.push('\n');
        Ok(())
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.pending.push_str(s);
        Ok(())
    }
    fn clear_line(&self) -> std::io::Result<()> {
        Ok(())
    }
    /// The end of one redraw: written out when the interval has passed.
    fn flush(&self) -> std::io::Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let text = std::mem::take(&mut st.pending);
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.is_empty())
            .collect();
        if lines.is_empty() || st.last.elapsed() < self.interval {
            return Ok(());
        }
        st.last = Instant::now();
        for l in lines {
            writeln!(st.out, "{l}")?;
        }
        st.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A shared buffer to read back what the target wrote.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl Buffer {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn logged_bar(interval: Duration) -> (ProgressBar, Buffer) {
        let buffer = Buffer::default();
        let lines = LogLines::new(Box::new(buffer.clone()), interval);
        let bar = ProgressBar::with_draw_target(
            Some(10),
            ProgressDrawTarget::term_like_with_hz(Box::new(lines), 1),
        );
        bar.set_style(ProgressStyle::with_template("{msg}: {pos}/{len}").unwrap());
        bar.set_message("work");
        (bar, buffer)
    }

    #[test]
    fn logs_get_plain_lines_at_the_interval_and_short_work_none() {
        let (bar, out) = logged_bar(Duration::ZERO);
        bar.set_position(3);
        bar.finish_and_clear();
        let text = out.text();
        assert!(text.contains("work: 3/10\n"), "{text:?}");
        assert!(
            !text.bytes().any(|b| b == 0x1b || b == b'\r'),
            "plain lines only: {text:?}"
        );

        let (bar, out) = logged_bar(Duration::from_secs(3600));
        for _ in 0..10 {
            bar.inc(1);
        }
        bar.finish_and_clear();
        assert_eq!(out.text(), "", "nothing before the first interval");
    }
}
