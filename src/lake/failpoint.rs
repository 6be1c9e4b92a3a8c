//! Failpoints: how the tests stop a process at a chosen point between two
//! writes, to show that a rerun completes the work. With
//! `CUSTLAKE_FAILPOINT=name` the process aborts the first time it reaches
//! `name`; with `name@N`, the N-th time. A point that stands for a fault
//! the process survives (a query that ran out of memory) asks
//! [`failpoint_fails`] instead and fails there. Without the variable
//! nothing happens (one read of the environment per process).

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

/// Whether this is the failpoint's point and hit.
fn hit(name: &str) -> bool {
    let Some((point, at)) = wanted() else {
        return false;
    };
    if point != name {
        return false;
    }
    static HITS: Mutex<u64> = Mutex::new(0);
    let mut hits = HITS.lock().unwrap_or_else(|p| p.into_inner());
    *hits += 1;
    *hits == *at
}

/// Abort here if the failpoint names this point (and this is its hit).
pub fn failpoint(name: &str) {
    if hit(name) {
        tracing::warn!("failpoint {name}: aborting");
        std::process::abort();
    }
}

/// Whether to fail here: the failpoint names this point and this is its
/// hit. The caller makes the fault its point stands for.
pub fn failpoint_fails(name: &str) -> bool {
    let fails = hit(name);
    if fails {
        tracing::warn!("failpoint {name}: failing");
    }
    fails
}
