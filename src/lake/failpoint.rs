//! Failpoints: how the tests stop a process at a chosen point between two
//! writes, to show that a rerun completes the work. With
//! `CUSTLAKE_FAILPOINT=name` the process aborts the first time it reaches
//! `name`; with `name@N`, the N-th time. Without the variable nothing
//! happens (one read of the environment per process).

use std::sync::Mutex;
use std::sync::OnceLock;

fn wanted() -> Option<&'static (String, u64)> {
    static WANTED: OnceLock<Option<(String, u64)>> = OnceLock::new();
    WANTED
        .get_or_init(|| {
            let v = std::env::var("CUSTLAKE_FAILPOINT").ok()?;
            Some(match v.rsplit_once('@') {
                Some((name, n)) => (name.to_string(), n.parse().unwrap_or(1)),
                None => (v, 1),
            })
        })
        .as_ref()
}

/// Abort here if the failpoint names this point (and this is its hit).
pub fn failpoint(name: &str) {
    let Some((point, at)) = wanted() else {
        return;
    };
    if point != name {
        return;
    }
    static HITS: Mutex<u64> = Mutex::new(0);
    let mut hits = HITS.lock().unwrap_or_else(|p| p.into_inner());
    *hits += 1;
    if *hits == *at {
        tracing::warn!("failpoint {name}: aborting");
        std::process::abort();
    }
}
