//! Progress on a terminal: bars drawn with indicatif on standard error,
//! notices printed there too (also with `--quiet`, which hides the bars).

use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::progress::{Progress, Task, Unit};

/// The command line's progress reporter.
pub(crate) struct Terminal {
    pub(crate) bars: bool,
}

struct Bar(ProgressBar);

impl Progress for Terminal {
    fn task(&self, label: &str, total: Option<u64>, unit: Unit) -> Arc<dyn Task> {
        if !self.bars {
            return Arc::new(Bar(ProgressBar::hidden()));
        }
        let bar = match total {
            Some(n) => ProgressBar::new(n),
            None => ProgressBar::new_spinner(),
        };
        let template = match unit {
            Unit::Bytes => {
                "{prefix:.bold} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {msg} ({elapsed})"
                    .to_string()
            }
            Unit::Steps => "{spinner} {prefix} [{bar:20}] {pos}/{len} {msg} ({elapsed})".to_string(),
            Unit::Items(what) => format!(
                "{{prefix}} [{{bar:30}}] {{pos}}/{{len}} {what} {{per_sec}} ({{elapsed}}, eta {{eta}})"
            ),
        };
        bar.set_style(
            ProgressStyle::with_template(&template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(label.to_string());
        if unit == Unit::Steps {
            bar.enable_steady_tick(Duration::from_millis(200));
        }
        Arc::new(Bar(bar))
    }

    fn notice(&self, message: &str) {
        eprintln!("{message}");
    }
}

impl Task for Bar {
    fn set_position(&self, position: u64) {
        self.0.set_position(position);
    }
    fn inc(&self, delta: u64) {
        self.0.inc(delta);
    }
    fn set_message(&self, message: &str) {
        self.0.set_message(message.to_string());
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
    fn fail(&self, message: &str) {
        self.0.abandon_with_message(message.to_string());
    }
}
