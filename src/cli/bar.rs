//! The progress bar of long commands: bytes, rate and time left, on
//! standard error.

use std::io::IsTerminal;

/// A progress bar on standard error, shown only when it is a terminal and
/// `--quiet` was not given (so scripts and logs get clean output).
pub struct Bar(Option<indicatif::ProgressBar>);

impl Bar {
    /// A bar labelled `what`; hidden when `quiet` or when standard error
    /// is not a terminal.
    pub fn new(what: &str, quiet: bool) -> Bar {
        if quiet || !std::io::stderr().is_terminal() {
            return Bar(None);
        }
        let bar = indicatif::ProgressBar::new(0);
        let style = indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(what.to_string());
        Bar(Some(bar))
    }

    /// The library progress handle that moves this bar (`None` when the
    /// bar is hidden, so the operation does not report at all).
    pub fn progress(&self) -> Option<diskvault::Progress> {
        let bar = self.0.clone()?;
        Some(diskvault::Progress::from_sink(std::sync::Arc::new(
            BarSink(bar),
        )))
    }

    /// Removes the bar, before the command prints its report.
    pub fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

/// Moves a bar; a new phase restarts it under the phase's name (so the
/// rate and time left are those of the phase).
struct BarSink(indicatif::ProgressBar);

impl diskvault::ProgressSink for BarSink {
    fn phase(&self, name: &str, total: u64) {
        self.0.set_prefix(name.to_string());
        self.0.set_length(total);
        self.0.reset();
    }

    fn update(&self, done: u64, total: u64) {
        self.0.set_length(total);
        self.0.set_position(done);
    }
}
