//! `[analytics]`: the business rules' numbers and how a score or list
//! runs.

use serde::{Deserialize, Serialize};

/// The business rules' numbers: scoring weights and caps (bound as
/// parameters of `sql/analytics/score.sql`), the cross-sell pairs and the
/// churn threshold of the lists.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsConfig {
    /// Parameters of `sql/analytics/*.sql` by name (numbers).
    pub params: std::collections::BTreeMap<String, f64>,
    /// Cross-sell: customers holding `has` and not `lacks` are offered `lacks`.
    pub cross_sell: Vec<CrossSell>,
    /// The churn list takes tier A and B customers who are silent or whose
    /// churn risk is at least this.
    pub churn_threshold: f64,
    /// The longest renewal window a list may ask for, in days.
    pub max_within_days: u32,
    /// The most golden customers `custlake score` scores in one pass (0:
    /// 250 a megabyte of the query memory); see [`Self::score_pass`].
    pub score_pass_customers: u64,
    /// How a score's or list's operators share `query.memory_limit_mb`.
    #[serde(default)]
    pub memory_pool: MemoryPool,
}

/// How operators share a runtime's memory (`analytics.memory_pool` for
/// scores and lists; the server's shared pool is always fair).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemoryPool {
    /// First come, first served up to the limit; an aggregate or sort
    /// spills only when the pool is full. For one whole-book job alone in
    /// its runtime (a score run): fair shares cut its plan's thirty-odd
    /// sorts and aggregates to about 130 MB each, and the per-record
    /// aggregate of a million customers spilled 514 MB with the process
    /// holding 1.4 of its 4 GB.
    #[default]
    Greedy,
    /// Each aggregate or sort gets an equal share of what the joins leave:
    /// many queries at once, none starved.
    Fair,
}

impl AnalyticsConfig {
    /// Golden customers a scoring pass takes at most, given the query
    /// memory (`query.memory_limit_mb`).
    pub fn score_pass(&self, memory_limit_mb: u64) -> u64 {
        match self.score_pass_customers {
            0 => memory_limit_mb.saturating_mul(250).max(1),
            n => n,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrossSell {
    pub has: String,
    pub lacks: String,
}
