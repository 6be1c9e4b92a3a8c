//! Answers of the identity routes (lineage, suspects) kept while the lake
//! has not changed: the same question by the same principal, with every
//! table at the version it had when the answer was computed, gets the same
//! answer without reading the tables again. An answer is kept at most a
//! minute (row filters may depend on the time, as the telesales role's
//! "a list of the last 90 days" does) and the cache holds at most
//! [`MAX_ANSWERS`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use datafusion::prelude::SessionContext;

use super::SharedState;
use super::error::ApiError;
use crate::security::Principal;

/// Answers held at most; the whole cache is dropped when it is full.
const MAX_ANSWERS: usize = 512;
/// The longest an answer is kept.
const TTL: Duration = Duration::from_secs(60);

#[derive(Default)]
pub(crate) struct Answers {
    held: std::sync::Mutex<HashMap<String, (Instant, serde_json::Value)>>,
}

/// The key of a question: the route and its parameters, the principal
/// (its row filters follow from role and attributes), and the tables'
/// versions.
fn key(question: &str, principal: &Principal, versions: &str) -> String {
    format!("{question}\u{1f}{}\u{1f}{versions}", whose(principal))
}

/// What a principal's masks and row filters follow from (user, role,
/// teams, regions, agent), as part of a cache key.
pub(crate) fn whose(p: &Principal) -> String {
    format!(
        "{}\u{1f}{}\u{1f}{:?}\u{1f}{:?}\u{1f}{:?}",
        p.user, p.role, p.teams, p.regions, p.agent_id
    )
}

impl Answers {
    /// The answer to `question` for `principal`: kept, or computed by
    /// `compute` on the principal's session. Building the session checks
    /// every table for a newer version; when none had one (the versions
    /// before and after are the same), a kept answer for those versions is
    /// the answer, and a new one is kept if still nothing changed while it
    /// was computed.
    pub(crate) async fn get_or(
        &self,
        state: &SharedState,
        principal: &Principal,
        question: &str,
        reads: &[&str],
        compute: impl AsyncFnOnce(SessionContext) -> Result<serde_json::Value, ApiError>,
    ) -> Result<serde_json::Value, ApiError> {
        let tables = depends_on(state, principal, reads);
        let before = state.tables.versions(&tables).await;
        let ctx = super::query::session_of(state, principal).await?;
        let seen = state
            .tables
            .versions(&tables)
            .await
            .filter(|v| Some(v) == before.as_ref());
        if let Some(v) = &seen
            && let Some(answer) = self.lookup(&key(question, principal, v))
        {
            metrics::counter!("custlake_answer_cache_hits_total").increment(1);
            return Ok(answer);
        }
        let answer = compute(ctx).await?;
        let after = state.tables.versions(&tables).await;
        if let Some(v) = seen
            && after.as_ref() == Some(&v)
        {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            if held.len() >= MAX_ANSWERS {
                held.retain(|_, (at, _)| at.elapsed() < TTL);
            }
            if held.len() >= MAX_ANSWERS {
                held.clear();
            }
            held.insert(
                key(question, principal, &v),
                (Instant::now(), answer.clone()),
            );
        }
        Ok(answer)
    }

    fn lookup(&self, key: &str) -> Option<serde_json::Value> {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.get(key)
            .filter(|(at, _)| at.elapsed() < TTL)
            .map(|(_, v)| v.clone())
    }
}

/// The tables an answer depends on: those the question reads, and those
/// the principal's row filters read (a table name anywhere in a filter).
pub(crate) fn depends_on(
    state: &SharedState,
    principal: &Principal,
    reads: &[&str],
) -> Vec<String> {
    let mut out: Vec<String> = reads.iter().map(|t| t.to_string()).collect();
    let catalog = &state.warehouse.catalog;
    if let Ok(role) = state.security.role(principal) {
        for t in &catalog.tables {
            let Some(filter) = role.row_filter(&t.name) else {
                continue;
            };
            for word in filter.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if catalog.table(word).is_ok() && !out.iter().any(|o| o == word) {
                    out.push(word.to_string());
                }
            }
        }
    }
    out
}
