//! How long work reports itself: library code (ingest, resolve, tier
//! moves, the sample generator) reports progress and notices through
//! [`Progress`]; the command line draws progress bars, the server logs.

use std::sync::Arc;

/// What a task counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Bytes of a file.
    Bytes,
    /// Numbered steps of a run.
    Steps,
    /// Things of a kind (customers, rows).
    Items(&'static str),
}

/// Where progress and notices go.
pub trait Progress: Send + Sync {
    /// Start a task named `label` of `total` units (unknown: `None`).
    fn task(&self, label: &str, total: Option<u64>, unit: Unit) -> Arc<dyn Task>;
    /// Something the person running the work should know (a wait for a
    /// table another process holds, a fallback).
    fn notice(&self, message: &str);
}

/// One running task.
pub trait Task: Send + Sync {
    fn set_position(&self, position: u64);
    fn inc(&self, delta: u64);
    fn set_message(&self, message: &str);
    /// Done: the task disappears.
    fn finish(&self);
    /// Failed: the task stays with `message`.
    fn fail(&self, message: &str);
}

/// Reports nothing (tests, `--quiet` library use).
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Progress for Silent {
    fn task(&self, _: &str, _: Option<u64>, _: Unit) -> Arc<dyn Task> {
        Arc::new(Silent)
    }
    fn notice(&self, _: &str) {}
}

impl Task for Silent {
    fn set_position(&self, _: u64) {}
    fn inc(&self, _: u64) {}
    fn set_message(&self, _: &str) {}
    fn finish(&self) {}
    fn fail(&self, _: &str) {}
}

/// Logs tasks as they start and end, and notices (the server).
#[derive(Debug, Clone, Copy, Default)]
pub struct Logged;

struct LoggedTask {
    label: String,
    started: std::time::Instant,
}

impl Progress for Logged {
    fn task(&self, label: &str, total: Option<u64>, _: Unit) -> Arc<dyn Task> {
        tracing::info!(task = label, total, "started");
        Arc::new(LoggedTask {
            label: label.to_string(),
            started: std::time::Instant::now(),
        })
    }
    fn notice(&self, message: &str) {
        tracing::info!("{message}");
    }
}

impl Task for LoggedTask {
    fn set_position(&self, _: u64) {}
    fn inc(&self, _: u64) {}
    fn set_message(&self, _: &str) {}
    fn finish(&self) {
        tracing::info!(
            task = self.label,
            seconds = self.started.elapsed().as_secs_f64(),
            "done"
        );
    }
    fn fail(&self, message: &str) {
        tracing::warn!(task = self.label, message, "failed");
    }
}
