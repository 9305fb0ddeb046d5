//! The progress bar: one bar over all scenario steps, the current step as its message, notes
//! printed above it. Hidden when stderr is not a terminal (notes are still printed).

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bar: ProgressBar,
    start: Instant,
    tty: bool,
}

impl Progress {
    pub fn new(steps: u64) -> Progress {
        let tty = std::io::stderr().is_terminal();
        let bar = ProgressBar::with_draw_target(
            Some(steps),
            if tty {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            },
        );
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} (eta {eta}) {wide_msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        Progress {
            bar,
            start: Instant::now(),
            tty,
        }
    }

    pub fn set_length(&self, steps: u64) {
        self.bar.set_length(steps);
    }

    /// The current step.
    pub fn set(&self, msg: &str) {
        self.bar.set_message(msg.to_string());
        if !self.tty {
            eprintln!("[{:6.1}s] {msg}", self.start.elapsed().as_secs_f64());
        }
    }

    pub fn inc(&self) {
        self.bar.inc(1);
    }

    /// A line kept above the bar.
    pub fn note(&self, msg: &str) {
        if self.tty {
            self.bar.println(msg);
        } else {
            eprintln!("[{:6.1}s] {msg}", self.start.elapsed().as_secs_f64());
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
