//! Table leases: mutual exclusion between `tier apply` and loads into the
//! same tiered table, across processes and machines, with nothing but the
//! catalog's put-if-absent records.
//!
//! A move copies a range, advances the watermarks, then deletes the range
//! from its source; a load routes rows by the watermarks it read. Either
//! interleaving of the two loses rows (a load committed between the copy
//! and the delete is deleted with the range; a load routed by the old
//! watermarks lands in a tier that no longer shows it). So both hold the
//! table's lease while they run.
//!
//! The lease is the newest record of `locks/<table>` in the catalog. To
//! take it, a process writes the next version (put-if-absent: of two
//! takers one wins) when the newest says released, expired, or held by a
//! process on this machine that no longer runs. The holder renews it
//! (again by writing the next version) every third of its time to live, and
//! writes a released record when done. Old records are pruned on release.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::catalog::{self, Stamped};
use super::{Lake, LakeError};

/// How long a lease lives without renewal.
const TTL: Duration = Duration::from_secs(60);

/// Tokens of the leases this process holds now (a lease record naming
/// this process with a token not here was left by a task that ended).
static LIVE: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

fn live(f: impl FnOnce(&mut BTreeSet<String>) -> bool) -> bool {
    f(&mut LIVE.lock().unwrap_or_else(|p| p.into_inner()))
}

/// One record of `locks/<table>`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// Empty once released.
    pub token: String,
    /// What holds it (`tier apply`, `ingest policy_a.csv`, ...).
    pub purpose: String,
    pub pid: u32,
    /// The holder's machine and boot (`/proc/sys/kernel/random/boot_id`),
    /// and its process start time, to tell a dead holder from a live one.
    pub boot: String,
    pub started: String,
    pub host: String,
    /// Held until then unless renewed.
    pub until: String,
    #[serde(default)]
    pub at: String,
    /// The process waiting longest for the lease, which takes it next: the
    /// token of its claim and until when the claim stands unless repeated
    /// (so that a steady stream of loads cannot keep a move out, nor the
    /// other way round).
    #[serde(default)]
    pub waiter: String,
    #[serde(default)]
    pub waiter_until: String,
}

impl Stamped for LeaseRecord {
    fn at(&self) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(&self.at)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }
}

fn parse(t: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(t)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

/// How long a waiter's claim stands unless repeated.
const CLAIM: Duration = Duration::from_secs(3);

fn kind(table: &str) -> String {
    format!("locks/{table}")
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Start time of a process (field 22 of `/proc/<pid>/stat`), empty where
/// there is no `/proc` or no such process.
fn start_time(pid: u32) -> String {
    let stat = read_trim(&format!("/proc/{pid}/stat"));
    // The command name (field 2) may hold spaces; fields after it do not.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(19))
        .unwrap_or_default()
        .to_string()
}

fn boot_id() -> String {
    read_trim("/proc/sys/kernel/random/boot_id")
}

fn host() -> String {
    let h = read_trim("/proc/sys/kernel/hostname");
    if h.is_empty() {
        std::env::var("HOSTNAME").unwrap_or_default()
    } else {
        h
    }
}

fn new_token() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let mut h = Sha256::new();
    h.update(std::process::id().to_le_bytes());
    h.update(N.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    h.update(
        Utc::now()
            .timestamp_nanos_opt()
            .unwrap_or_default()
            .to_le_bytes(),
    );
    hex::encode(&h.finalize()[..12])
}

impl LeaseRecord {
    /// Whether nobody holds the lease by this record.
    fn free(&self, now: DateTime<Utc>) -> bool {
        if self.token.is_empty() {
            return true;
        }
        if parse(&self.until) <= now {
            return true;
        }
        // A holder on this machine (same boot) can be checked directly.
        if self.boot.is_empty() || self.boot != boot_id() {
            return false;
        }
        if self.pid == std::process::id() {
            return !live(|l| l.contains(&self.token));
        }
        start_time(self.pid) != self.started
    }

    /// Whether another waiter's claim stands at `now`.
    fn claimed_by_other(&self, token: &str, now: DateTime<Utc>) -> bool {
        !self.waiter.is_empty() && self.waiter != token && parse(&self.waiter_until) > now
    }

    fn describe(&self) -> String {
        if self.token.is_empty() {
            return format!(
                "another process next in line (its claim stands until {})",
                self.waiter_until
            );
        }
        format!(
            "{} (process {} on {}, lease until {})",
            self.purpose, self.pid, self.host, self.until
        )
    }
}

/// A held lease. Renewed in the background until [`Lease::release`]; if a
/// renewal fails the lease may have been lost, which [`Lease::check`]
/// reports before the holder commits anything else.
pub struct Lease {
    table: String,
    token: String,
    lost: Arc<AtomicBool>,
    renewer: tokio::task::JoinHandle<()>,
}

/// Write `record` after the newest version of a lease's records, if that
/// still names `token` (the holder's renewal and release: a waiter may
/// have added its claim since). `Ok(false)`: the lease is no longer ours.
async fn rewrite_own(
    lake: &Lake,
    table: &str,
    token: &str,
    update: impl Fn(LeaseRecord) -> LeaseRecord,
) -> Result<bool, LakeError> {
    loop {
        let current = catalog::read::<LeaseRecord>(lake, &kind(table), None).await?;
        if current.value.token != token {
            return Ok(false);
        }
        let next = update(current.value);
        if let Some(v) = catalog::try_write(lake, &kind(table), current.version, &next).await? {
            if next.token.is_empty() {
                catalog::prune(lake, &kind(table), v).await;
            }
            return Ok(true);
        }
    }
}

impl Lease {
    /// Take `table`'s lease, waiting up to `wait` for its holder;
    /// `waiting` is told once who is being waited for.
    pub async fn acquire(
        lake: &Lake,
        table: &str,
        purpose: &str,
        wait: Duration,
        waiting: &(dyn Fn(&str) + Sync),
    ) -> Result<Lease, LakeError> {
        let token = new_token();
        let pid = std::process::id();
        let started = Instant::now();
        let mut told = false;
        loop {
            let current = catalog::read::<LeaseRecord>(lake, &kind(table), None).await?;
            let now = Utc::now();
            let free = current.version == 0 || current.value.free(now);
            let claimed = current.value.claimed_by_other(&token, now);
            if free && !claimed {
                let record = LeaseRecord {
                    token: token.clone(),
                    purpose: purpose.to_string(),
                    pid,
                    boot: boot_id(),
                    started: start_time(pid),
                    host: host(),
                    until: (now + TTL).to_rfc3339(),
                    at: now.to_rfc3339(),
                    waiter: String::new(),
                    waiter_until: String::new(),
                };
                live(|l| l.insert(token.clone()));
                match catalog::try_write(lake, &kind(table), current.version, &record).await {
                    Ok(Some(_)) => return Ok(Lease::start(lake, table, token)),
                    // Somebody else wrote first: look again.
                    Ok(None) => {
                        live(|l| l.remove(&token));
                        continue;
                    }
                    Err(e) => {
                        live(|l| l.remove(&token));
                        return Err(e);
                    }
                }
            }
            if started.elapsed() >= wait {
                if current.value.waiter == token {
                    // Give up the claim, so that nobody waits for it.
                    let withdrawn = LeaseRecord {
                        waiter: String::new(),
                        waiter_until: String::new(),
                        ..current.value.clone()
                    };
                    let _ =
                        catalog::try_write(lake, &kind(table), current.version, &withdrawn).await;
                }
                return Err(LakeError::Busy(format!(
                    "{table} is in use by {}; waited {} s (tiers.lock_wait_seconds); \
                     try again when it is done",
                    current.value.describe(),
                    wait.as_secs()
                )));
            }
            if !told {
                waiting(&format!(
                    "{table}: waiting for {}",
                    current.value.describe()
                ));
                told = true;
            }
            // Claim the next turn, or repeat the claim before it lapses.
            let mine = current.value.waiter == token;
            let renew_claim = mine && parse(&current.value.waiter_until) < now + CLAIM / 2;
            if !free && (!claimed && !mine || renew_claim) {
                let claim = LeaseRecord {
                    waiter: token.clone(),
                    waiter_until: (now + CLAIM).to_rfc3339(),
                    ..current.value.clone()
                };
                // Losing this race only means looking again.
                catalog::try_write(lake, &kind(table), current.version, &claim).await?;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn start(lake: &Lake, table: &str, token: String) -> Lease {
        let lost = Arc::new(AtomicBool::new(false));
        let renewer = {
            let (lake, table, token, lost) =
                (lake.clone(), table.to_string(), token.clone(), lost.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(TTL / 3).await;
                    let renewed = rewrite_own(&lake, &table, &token, |r| {
                        let now = Utc::now();
                        LeaseRecord {
                            until: (now + TTL).to_rfc3339(),
                            at: now.to_rfc3339(),
                            ..r
                        }
                    })
                    .await;
                    if !matches!(renewed, Ok(true)) {
                        // Taken over (it had expired) or not written.
                        tracing::warn!(table, result = ?renewed, "could not renew the table lease");
                        lost.store(true, Ordering::SeqCst);
                        return;
                    }
                }
            })
        };
        Lease {
            table: table.to_string(),
            token,
            lost,
            renewer,
        }
    }

    /// An error if the lease could not be renewed (another process may
    /// have taken it): the holder must stop before its next commit.
    pub fn check(&self) -> Result<(), LakeError> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(lost(&self.table));
        }
        Ok(())
    }

    /// Give the lease up, keeping a waiter's claim, and prune old records
    /// (tried three times; if it cannot be written the lease lapses when
    /// its time runs out, or at once for processes on this machine once
    /// this one ends).
    pub async fn release(mut self, lake: &Lake) {
        self.renewer.abort();
        let _ = (&mut self.renewer).await;
        live(|l| l.remove(&self.token));
        for _ in 0..3 {
            let released = rewrite_own(lake, &self.table, &self.token, |r| LeaseRecord {
                at: Utc::now().to_rfc3339(),
                waiter: r.waiter,
                waiter_until: r.waiter_until,
                ..LeaseRecord::default()
            })
            .await;
            match released {
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(table = self.table, error = %e, "could not release the table lease");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewer.abort();
        live(|l| l.remove(&self.token));
    }
}

tokio::task_local! {
    /// The leases the running task holds through [`with_lease`] (table and
    /// whether its renewal failed), innermost last.
    static HELD: Vec<(String, Arc<AtomicBool>)>;
}

/// Run `f` holding `table`'s lease, released whatever `f` returns. Every
/// commit `f` makes through [`crate::lake`]'s writers first checks
/// ([`check_held`]) that no lease the task holds has been lost.
pub async fn with_lease<T, E: From<LakeError>>(
    lake: &Lake,
    table: &str,
    purpose: &str,
    f: impl AsyncFnOnce(&Lease) -> Result<T, E>,
) -> Result<T, E> {
    let wait = Duration::from_secs(lake.settings().tiers.lock_wait_seconds);
    let purpose = format!("{purpose} (`{}`)", lake.holder());
    let lease = Lease::acquire(lake, table, &purpose, wait, &|m| lake.progress().notice(m)).await?;
    let mut held = HELD.try_with(|h| h.clone()).unwrap_or_default();
    held.push((table.to_string(), lease.lost.clone()));
    let out = HELD.scope(held, f(&lease)).await;
    lease.release(lake).await;
    out
}

/// An error if a lease the running task holds (through [`with_lease`])
/// could not be renewed: another process may have taken it, so nothing
/// more may be committed under it. The lake's writers call this right
/// before each commit.
pub fn check_held() -> Result<(), LakeError> {
    let lost = HELD
        .try_with(|h| {
            h.iter()
                .find(|(_, lost)| lost.load(Ordering::SeqCst))
                .map(|(t, _)| t.clone())
        })
        .ok()
        .flatten();
    match lost {
        Some(table) => Err(self::lost(&table)),
        None => Ok(()),
    }
}

/// The error of a holder whose lease on `table` could not be renewed.
fn lost(table: &str) -> LakeError {
    LakeError::Conflict(format!(
        "{table}: the table lease could not be renewed; stopped before the next \
         commit (run the command again)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_free_when_released_expired_or_its_process_is_gone() {
        let now = Utc::now();
        let held = LeaseRecord {
            token: "t".into(),
            purpose: "test".into(),
            pid: std::process::id(),
            boot: boot_id(),
            started: start_time(std::process::id()),
            host: host(),
            until: (now + TTL).to_rfc3339(),
            at: now.to_rfc3339(),
            waiter: String::new(),
            waiter_until: String::new(),
        };
        assert!(LeaseRecord::default().free(now));
        // Held by this process, but by no live task of it: free.
        assert!(held.free(now));
        live(|l| l.insert("t".into()));
        assert!(!held.free(now));
        live(|l| l.remove("t"));
        let expired = LeaseRecord {
            until: (now - chrono::Duration::seconds(1)).to_rfc3339(),
            ..held.clone()
        };
        assert!(expired.free(now));
        // Another machine: only expiry frees it.
        let elsewhere = LeaseRecord {
            boot: "another-boot".into(),
            pid: 1,
            ..held.clone()
        };
        assert!(!elsewhere.free(now));
        if !boot_id().is_empty() {
            // A process on this machine that has ended: free.
            let dead = LeaseRecord {
                pid: u32::MAX - 1,
                started: "1".into(),
                ..held
            };
            assert!(dead.free(now));
        }
    }
}

#[cfg(test)]
mod turns {
    use super::*;

    fn memory_lake(name: &str) -> Lake {
        let mut config = crate::config::Config::embedded();
        config.lake = format!("memory://{name}");
        Lake::new(&config).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiter_gets_the_next_turn_before_the_holder_takes_it_again() {
        let lake = memory_lake("lease-turns");
        let quiet = |_: &str| {};
        let wait = Duration::from_secs(10);
        let a = Lease::acquire(&lake, "policy", "a", wait, &quiet)
            .await
            .unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let b = {
            let (lake, order) = (lake.clone(), order.clone());
            tokio::spawn(async move {
                let b = Lease::acquire(&lake, "policy", "b", wait, &|_| {})
                    .await
                    .unwrap();
                order.lock().unwrap().push("b");
                tokio::time::sleep(Duration::from_millis(300)).await;
                b.release(&lake).await;
            })
        };
        // Once b has claimed its turn (its claim is in the lease record),
        // give the lease up and ask at once again.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let record = catalog::read::<LeaseRecord>(&lake, &kind("policy"), None)
                .await
                .unwrap();
            if !record.value.waiter.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "b never claimed its turn");
            tokio::task::yield_now().await;
        }
        assert!(
            order.lock().unwrap().is_empty(),
            "b ran while a held the lease"
        );
        a.release(&lake).await;
        let again = Lease::acquire(&lake, "policy", "a again", wait, &quiet)
            .await
            .unwrap();
        order.lock().unwrap().push("a");
        b.await.unwrap();
        assert_eq!(*order.lock().unwrap(), ["b", "a"]);
        again.check().unwrap();
        again.release(&lake).await;
        // A short wait for a held lease fails, naming the holder.
        let c = Lease::acquire(&lake, "policy", "c", wait, &quiet)
            .await
            .unwrap();
        let err = Lease::acquire(&lake, "policy", "d", Duration::from_millis(200), &quiet)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("policy is in use by c (process"), "{err}");
        c.release(&lake).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nothing_is_committed_under_a_lease_whose_renewal_failed() {
        let lake = memory_lake("lease-lost");
        let catalog = crate::schema::Catalog::embedded().unwrap();
        let def = catalog.table("code_list").unwrap();
        let ctx = crate::lake::session::write_context();
        let empty = datafusion::arrow::record_batch::RecordBatch::new_empty(def.arrow_schema());
        // Held and renewed: the write commits.
        with_lease(&lake, "code_list", "test", async |_| {
            crate::lake::overwrite(&lake, &ctx, def, empty.clone(), Vec::new()).await
        })
        .await
        .unwrap();
        let before = lake.open(def).await.unwrap().unwrap().version();
        // A renewal failed (another process may hold it now): the next
        // commit stops, also under a lease taken inside the first.
        let err = with_lease(&lake, "code_list", "test", async |held| {
            held.lost.store(true, Ordering::SeqCst);
            with_lease(&lake, "other", "inner", async |_| {
                crate::lake::overwrite(&lake, &ctx, def, empty.clone(), Vec::new()).await
            })
            .await
        })
        .await
        .unwrap_err();
        assert!(matches!(err, LakeError::Conflict(_)), "{err}");
        assert!(
            err.to_string()
                .contains("code_list: the table lease could not be renewed")
        );
        assert_eq!(lake.open(def).await.unwrap().unwrap().version(), before);
        // Outside any lease nothing is checked.
        check_held().unwrap();
    }
}
