//! Progress of work on a file, drawn on stderr while a person watches: a bar
//! with bytes and lines done, the rate and the time left, then a spinner while
//! the server works on what it got. Nothing is drawn when stderr is not a
//! terminal (a script, a CI log), so output stays plain.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::time::Duration;

/// How often the spinner turns.
const TICK: Duration = Duration::from_millis(100);

/// Redraws a second at most: a terminal over SSH keeps up.
const REDRAWS_PER_SECOND: u8 = 10;

fn target(visible: bool) -> ProgressDrawTarget {
    if visible {
        ProgressDrawTarget::stderr_with_hz(REDRAWS_PER_SECOND)
    } else {
        ProgressDrawTarget::hidden()
    }
}

/// A file's bytes and lines going by.
#[derive(Debug)]
pub struct FileProgress {
    bar: ProgressBar,
    visible: bool,
    lines: u64,
    /// Whether the last byte seen ended a line.
    at_line_start: bool,
}

impl FileProgress {
    /// A bar over `total` bytes, labelled `verb` ("uploading", "checking");
    /// hidden unless `visible`.
    pub fn new(total: u64, verb: &str, visible: bool) -> Self {
        let bar = ProgressBar::with_draw_target(Some(total), target(visible));
        let template = format!(
            "{verb} [{{wide_bar}}] {{bytes}}/{{total_bytes}}, {{msg}}, {{bytes_per_sec}}, ETA {{eta}}"
        );
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message("0 lines");
        Self {
            bar,
            visible,
            lines: 0,
            at_line_start: true,
        }
    }

    /// Counts `piece`, the next bytes of the file.
    pub fn advance(&mut self, piece: &[u8]) {
        let newlines = piece.iter().filter(|&&byte| byte == b'\n').count();
        self.lines += u64::try_from(newlines).unwrap_or(u64::MAX);
        if let Some(&last) = piece.last() {
            self.at_line_start = last == b'\n';
        }
        self.bar.set_message(format!("{} lines", self.lines()));
        self.bar.inc(u64::try_from(piece.len()).unwrap_or(u64::MAX));
    }

    /// Lines seen so far, a last line without `\n` included.
    pub fn lines(&self) -> u64 {
        self.lines + u64::from(!self.at_line_start)
    }

    /// The file is through: the bar stays on screen as it is, and a spinner
    /// below it says what is awaited now (until [`Waiting::done`]).
    pub fn then_wait_for(&self, what: &str) -> Waiting {
        self.bar.abandon();
        let spinner = ProgressBar::with_draw_target(None, target(self.visible));
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
            spinner.set_style(style);
        }
        spinner.set_message(what.to_owned());
        spinner.enable_steady_tick(TICK);
        Waiting(spinner)
    }
}

/// A spinner while the other side works.
#[derive(Debug)]
pub struct Waiting(ProgressBar);

impl Waiting {
    /// The wait is over: the spinner goes.
    pub fn done(self) {
        self.0.finish_and_clear();
    }
}
