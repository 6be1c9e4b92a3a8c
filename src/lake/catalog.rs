//! The lake's catalog: small versioned records in the hot tier's store,
//! under `_catalog/`. Each record is an immutable object
//! `<kind>/<version:020>.json`; a change writes the next version with
//! put-if-absent, so it is one atomic write that fails if anybody else
//! wrote that version first (the version read is the condition). Readers
//! take the highest version, or the highest written at or before a time.
//!
//! Kinds: `tiers/<table>` (a tiered table's two month watermarks),
//! `holds` (the legal holds) and `locks/<table>` (table leases, see
//! [`super::lease`]).

use chrono::{DateTime, Utc};
use datafusion::object_store::path::Path;
use datafusion::object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use futures::TryStreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Lake, LakeError, Tier};

fn store_err(what: &Path) -> impl FnOnce(datafusion::object_store::Error) -> LakeError {
    let what = what.to_string();
    move |source| LakeError::Catalog { what, source }
}

fn record_err(path: &Path) -> impl FnOnce(serde_json::Error) -> LakeError {
    let path = path.to_string();
    move |source| LakeError::Record { path, source }
}

fn dir(
    lake: &Lake,
    kind: &str,
) -> (
    std::sync::Arc<dyn datafusion::object_store::ObjectStore>,
    Path,
) {
    let (store, root) = lake.store(Tier::Hot);
    let mut p = root.join("_catalog");
    for part in kind.split('/') {
        p = p.join(part);
    }
    (store, p)
}

/// A record and the version it was read at (0: none written yet).
#[derive(Debug, Clone)]
pub struct Versioned<T> {
    pub version: u64,
    pub value: T,
}

/// The records of a kind: `(version, path)`, newest first.
async fn versions(
    store: &dyn datafusion::object_store::ObjectStore,
    dir: &Path,
) -> Result<Vec<(u64, Path)>, LakeError> {
    let mut versions: Vec<(u64, Path)> = store
        .list(Some(dir))
        .map_ok(|m| m.location)
        .try_collect::<Vec<_>>()
        .await
        .map_err(store_err(dir))?
        .into_iter()
        .filter_map(|p| {
            let version = p.filename()?.strip_suffix(".json")?.parse::<u64>().ok()?;
            Some((version, p))
        })
        .collect();
    versions.sort_unstable_by_key(|v| std::cmp::Reverse(v.0));
    Ok(versions)
}

/// The newest record of a kind (at or before `at`, when given).
pub async fn read<T: DeserializeOwned + Default + Stamped>(
    lake: &Lake,
    kind: &str,
    at: Option<DateTime<Utc>>,
) -> Result<Versioned<T>, LakeError> {
    let (store, dir) = dir(lake, kind);
    // A record listed may be pruned before it is read (a lease released
    // meanwhile writes a newer one and removes the old): list again.
    'listing: for attempt in 0..5 {
        for (version, path) in versions(store.as_ref(), &dir).await? {
            let got = match store.get(&path).await {
                Ok(g) => g.bytes().await,
                Err(e) => Err(e),
            };
            let bytes = match got {
                Ok(b) => b,
                Err(datafusion::object_store::Error::NotFound { .. }) if attempt < 4 => {
                    continue 'listing;
                }
                Err(e) => return Err(store_err(&path)(e)),
            };
            let value: T = serde_json::from_slice(&bytes).map_err(record_err(&path))?;
            if at.is_none_or(|t| value.at() <= t) {
                return Ok(Versioned { version, value });
            }
        }
        break;
    }
    Ok(Versioned {
        version: 0,
        value: T::default(),
    })
}

/// The newest version of a kind (0: none), from a listing alone.
pub async fn latest_version(lake: &Lake, kind: &str) -> Result<u64, LakeError> {
    let (store, dir) = dir(lake, kind);
    Ok(versions(store.as_ref(), &dir)
        .await?
        .first()
        .map_or(0, |v| v.0))
}

/// Write the record after version `read`; fails if that version is taken.
pub async fn write<T: Serialize>(
    lake: &Lake,
    kind: &str,
    read: u64,
    value: &T,
) -> Result<u64, LakeError> {
    try_write(lake, kind, read, value).await?.ok_or_else(|| {
        LakeError::Conflict(format!(
            "{kind} was changed by another process since it was read (version {} exists); run the command again",
            read + 1
        ))
    })
}

/// [`write`], with `None` when the version is taken.
pub async fn try_write<T: Serialize>(
    lake: &Lake,
    kind: &str,
    read: u64,
    value: &T,
) -> Result<Option<u64>, LakeError> {
    let (store, dir) = dir(lake, kind);
    let version = read + 1;
    let path = dir.clone().join(format!("{version:020}.json"));
    let body = serde_json::to_vec_pretty(value).map_err(record_err(&path))?;
    let opts = PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    match store.put_opts(&path, PutPayload::from(body), opts).await {
        Ok(_) => Ok(Some(version)),
        Err(datafusion::object_store::Error::AlreadyExists { .. }) => Ok(None),
        Err(e) => Err(store_err(&path)(e)),
    }
}

/// Delete the records of a kind older than version `keep` (best effort:
/// readers only ever use the newest).
pub async fn prune(lake: &Lake, kind: &str, keep: u64) {
    let (store, dir) = dir(lake, kind);
    let Ok(versions) = versions(store.as_ref(), &dir).await else {
        return;
    };
    for (_, path) in versions.into_iter().filter(|v| v.0 < keep) {
        let _ = store.delete(&path).await;
    }
}

/// When a record was written.
pub trait Stamped {
    fn at(&self) -> DateTime<Utc>;
}

/// A tiered table's watermarks: partitions at or after `warm_before` are
/// hot, in `[cold_before, warm_before)` warm, before `cold_before` cold.
/// `None` is before every partition (nothing has moved yet).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermarks {
    pub warm_before: Option<String>,
    pub cold_before: Option<String>,
    /// RFC 3339 time of the change.
    #[serde(default)]
    pub at: String,
}

impl Stamped for Watermarks {
    fn at(&self) -> DateTime<Utc> {
        stamp(&self.at)
    }
}

fn stamp(at: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(at)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

/// Now, as records keep it.
pub fn now() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

impl Watermarks {
    /// The partition range `[lo, hi)` a tier owns (a `None` bound is
    /// unbounded), or `None` when it owns nothing (warm and cold before
    /// anything has moved there).
    pub fn range(&self, tier: Tier) -> Option<(Option<&str>, Option<&str>)> {
        let (w, c) = (self.warm_before.as_deref(), self.cold_before.as_deref());
        match tier {
            Tier::Hot => Some((w, None)),
            Tier::Warm => {
                let w = w?;
                c.is_none_or(|c| c < w).then_some((c, Some(w)))
            }
            Tier::Cold => Some((None, Some(c?))),
        }
    }

    /// The tier that owns a partition value.
    pub fn owner(&self, partition: &str) -> Tier {
        if self.warm_before.as_deref().is_none_or(|w| partition >= w) {
            Tier::Hot
        } else if self.cold_before.as_deref().is_none_or(|c| partition >= c) {
            Tier::Warm
        } else {
            Tier::Cold
        }
    }

    /// Every row is hot (nothing has ever moved).
    pub fn all_hot(&self) -> bool {
        self.warm_before.is_none() && self.cold_before.is_none()
    }
}

pub async fn watermarks(
    lake: &Lake,
    table: &str,
    at: Option<DateTime<Utc>>,
) -> Result<Versioned<Watermarks>, LakeError> {
    read(lake, &format!("tiers/{table}"), at).await
}

/// The newest version of a table's watermarks (0: none), from a listing
/// alone: a cheap check that watermarks read earlier are still current.
pub async fn watermarks_version(lake: &Lake, table: &str) -> Result<u64, LakeError> {
    latest_version(lake, &format!("tiers/{table}")).await
}

pub async fn set_watermarks(
    lake: &Lake,
    table: &str,
    read_version: u64,
    w: &Watermarks,
) -> Result<u64, LakeError> {
    if let (Some(c), Some(wb)) = (&w.cold_before, &w.warm_before)
        && c > wb
    {
        return Err(LakeError::Fault(format!(
            "{table}: cold_before {c} is after warm_before {wb}"
        )));
    }
    write(lake, &format!("tiers/{table}"), read_version, w).await
}

/// One legal hold: a table's partitions (or all tiered tables'), or one
/// customer's rows everywhere. Held data is never purged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub id: String,
    /// `None`: every tiered table.
    pub table: Option<String>,
    /// Inclusive partition range (`YYYY-MM`).
    pub from: Option<String>,
    pub to: Option<String>,
    /// A golden customer id: the rows of all its source records.
    pub customer: Option<String>,
    pub reason: String,
    pub by: String,
    pub at: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Holds {
    pub holds: Vec<Hold>,
    #[serde(default)]
    pub at: String,
}

impl Stamped for Holds {
    fn at(&self) -> DateTime<Utc> {
        stamp(&self.at)
    }
}

pub async fn holds(lake: &Lake) -> Result<Versioned<Holds>, LakeError> {
    read(lake, "holds", None).await
}

pub async fn set_holds(lake: &Lake, read_version: u64, h: &Holds) -> Result<u64, LakeError> {
    write(lake, "holds", read_version, h).await
}
