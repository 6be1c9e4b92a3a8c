//! Customer analytics: lifecycle stages, value and churn scores
//! ([`score`]), steward terminations ([`lifecycle`]) and the renewal,
//! cross-sell and churn lists ([`lists`]).
//!
//! The rules are SQL in `sql/analytics/` (each file's header says what it
//! computes and how); the numbers they use are `[analytics]` in the config,
//! bound as parameters. This module runs them over the lake's tables and
//! stores what they produce.

pub mod lifecycle;
pub mod lists;
pub mod score;

use std::collections::HashMap;

use datafusion::common::ScalarValue;
use datafusion::prelude::SessionContext;

use crate::config::Config;
use crate::error::{Classify, ErrorKind};
use crate::lake::{AsOf, Lake, LakeError};
use crate::query::QueryError;
use crate::query::named::{NamedQuery, ParamError};
use crate::schema::{Catalog, SchemaError};

/// The rules, as shipped in `sql/analytics/`.
const FILES: &[(&str, &str)] = &[
    ("score.sql", include_str!("../../sql/analytics/score.sql")),
    (
        "pass_xref.sql",
        include_str!("../../sql/analytics/pass_xref.sql"),
    ),
    (
        "pass_policies.sql",
        include_str!("../../sql/analytics/pass_policies.sql"),
    ),
    (
        "reachable.sql",
        include_str!("../../sql/analytics/reachable.sql"),
    ),
    (
        "in_force.sql",
        include_str!("../../sql/analytics/in_force.sql"),
    ),
    (
        "renewals.sql",
        include_str!("../../sql/analytics/renewals.sql"),
    ),
    (
        "cross_sell.sql",
        include_str!("../../sql/analytics/cross_sell.sql"),
    ),
    ("churn.sql", include_str!("../../sql/analytics/churn.sql")),
    ("assign.sql", include_str!("../../sql/analytics/assign.sql")),
];

#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error(transparent)]
    Param(#[from] ParamError),
    /// A request the rules refuse (a bad option, a date without scores).
    #[error("{0}")]
    Invalid(String),
    /// The state does not allow it (reactivating a historical customer).
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    NotFound(String),
    #[error("analytics rule {0}: {1}")]
    Rule(String, String),
}

impl Classify for AnalyticsError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Query(e) => e.kind(),
            Self::Lake(e) => e.kind(),
            Self::Schema(e) => e.kind(),
            Self::Param(e) => e.kind(),
            Self::Invalid(_) => ErrorKind::InvalidParameter,
            Self::Refused(_) => ErrorKind::Refused,
            Self::NotFound(_) => ErrorKind::NotFound,
            Self::Rule(..) => ErrorKind::Internal,
        }
    }
}

impl From<datafusion::arrow::error::ArrowError> for AnalyticsError {
    fn from(e: datafusion::arrow::error::ArrowError) -> Self {
        Self::Query(QueryError::from(datafusion::error::DataFusionError::from(
            e,
        )))
    }
}

impl From<datafusion::error::DataFusionError> for AnalyticsError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        Self::Query(QueryError::from(e))
    }
}

/// One rule of `sql/analytics/` by its name.
pub fn rule(name: &str) -> Result<NamedQuery, AnalyticsError> {
    let (file, text) = FILES
        .iter()
        .find(|(f, _)| f.trim_end_matches(".sql") == name)
        .ok_or_else(|| AnalyticsError::Rule(name.into(), "no such file".into()))?;
    NamedQuery::parse(file, text).map_err(|e| AnalyticsError::Rule(name.into(), e))
}

/// Every rule of `sql/analytics/` (for the documentation and the tests).
pub fn rules() -> Result<Vec<NamedQuery>, AnalyticsError> {
    FILES
        .iter()
        .map(|(f, _)| rule(f.trim_end_matches(".sql")))
        .collect()
}

/// [`bind`] with those of `given` that `q` declares: one set of values
/// for several rules, each taking its own.
pub fn bind_own(
    config: &Config,
    q: &NamedQuery,
    given: &HashMap<String, String>,
) -> Result<Vec<(String, ScalarValue)>, AnalyticsError> {
    let own: HashMap<String, String> = given
        .iter()
        .filter(|(k, _)| q.params.iter().any(|p| &p.name == *k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    bind(config, q, &own)
}

/// A rule's parameters: those `given` (as text), then the config's
/// `[analytics.params]` and churn threshold, then the header's defaults.
pub fn bind(
    config: &Config,
    q: &NamedQuery,
    given: &HashMap<String, String>,
) -> Result<Vec<(String, ScalarValue)>, AnalyticsError> {
    let mut all = given.clone();
    let a = &config.analytics;
    for p in &q.params {
        if all.contains_key(&p.name) {
            continue;
        }
        let configured = match p.name.as_str() {
            "churn_threshold" => Some(a.churn_threshold),
            n => a.params.get(n).copied(),
        };
        if let Some(v) = configured {
            let text = if p.ty == crate::query::named::ParamType::Int {
                format!("{}", v.round() as i64)
            } else {
                format!("{v}")
            };
            all.insert(p.name.clone(), text);
        }
    }
    Ok(q.bind_text(&all)?)
}

/// A context over the lake's tables as they are (`as_of` `None`) or were,
/// for the rules: every declared table is there, empty when the lake has
/// none yet (no steward decision, no agent roster).
pub async fn context(
    config: &Config,
    lake: &Lake,
    catalog: &Catalog,
    as_of: Option<&AsOf>,
) -> Result<SessionContext, AnalyticsError> {
    context_reading(config, lake, catalog, as_of, None).await
}

/// [`context`] with only the declared tables in `only` (all: `None`).
pub async fn context_reading(
    config: &Config,
    lake: &Lake,
    catalog: &Catalog,
    as_of: Option<&AsOf>,
    only: Option<&[&str]>,
) -> Result<SessionContext, AnalyticsError> {
    // A list or score runs alone in its runtime: by default its sorts and
    // aggregates take memory as they need it, up to the limit
    // (analytics.memory_pool, see MemoryPool::Greedy).
    let runtime = crate::lake::session::runtime_with(
        config.analytics.memory_pool,
        config.query.memory_limit_mb,
        config.query.metadata_cache_mb,
    )
    .map_err(crate::query::QueryError::from)?;
    let ctx = crate::query::context_on(config, runtime);
    {
        // A join whose smaller side (by the tables' statistics) holds up
        // to ten million rows and a quarter of the memory pool builds one
        // table that every thread probes, rather than reshuffling both
        // sides between the threads by key. The rules join a few hundred
        // thousand filtered rows (policies in force, consents, expiring
        // policies) to the 2.6 million source records of customer_xref:
        // reshuffling those, the default above 128K rows, took a tenth of
        // each list's time at a million customers.
        let state = ctx.state_ref();
        let mut state = state.write();
        let optimizer = &mut state.config_mut().options_mut().optimizer;
        optimizer.hash_join_single_partition_threshold_rows = 10_000_000;
        optimizer.hash_join_single_partition_threshold =
            (config.query.memory_limit_mb as usize).saturating_mul(1024 * 1024) / 4;
    }
    // Text as views: the rules' keys (customer and source ids) are never
    // copied through their joins and aggregates (see Text::Views).
    crate::query::register_declared_as(
        &ctx,
        lake,
        catalog,
        as_of,
        crate::lake::session::Text::Views,
        only,
    )
    .await?;
    Ok(ctx)
}

/// The tables `sql` reads (the names of its own CTEs left out).
pub fn tables_read(sql: &str) -> Result<Vec<String>, AnalyticsError> {
    let state = datafusion::execution::SessionStateBuilder::new().build();
    let dialect = state.config().options().sql_parser.dialect;
    let statement = state.sql_to_statement(sql, &dialect)?;
    let mut names: Vec<String> = state
        .resolve_table_references(&statement)?
        .into_iter()
        .map(|t| t.table().to_string())
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

/// Parse a `YYYY-MM-DD` date option (`today` is today, UTC).
pub fn parse_date(what: &str, text: &str) -> Result<chrono::NaiveDate, AnalyticsError> {
    if text == "today" {
        return Ok(chrono::Utc::now().date_naive());
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
        AnalyticsError::Invalid(format!(
            "{what} {text:?}: expected a date as YYYY-MM-DD (or today)"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tables_a_rule_reads_leave_out_its_own_names() {
        let read = tables_read(
            "WITH xref AS (SELECT * FROM customer_xref WHERE customer_id >= $from_id), \
             mine AS (SELECT p.* FROM xref x JOIN policy p ON p.source_id = x.source_id) \
             SELECT * FROM mine m LEFT JOIN (SELECT policy_no FROM payment) y \
             ON y.policy_no = m.policy_no WHERE EXISTS (SELECT 1 FROM claim c)",
        )
        .unwrap();
        assert_eq!(read, ["claim", "customer_xref", "payment", "policy"]);
        assert!(tables_read("SELECT * FROM (").is_err());
    }

    #[test]
    fn the_score_rule_reads_declared_tables_only() {
        let catalog = Catalog::embedded().unwrap();
        let read = score::tables_read().unwrap();
        for t in [
            "customer",
            "customer_xref",
            "policy",
            "payment",
            "interaction",
            "claim",
        ] {
            assert!(read.iter().any(|r| r == t), "{t} missing from {read:?}");
        }
        for t in &read {
            assert!(catalog.table(t).is_ok(), "{t} is not declared");
        }
    }
}
