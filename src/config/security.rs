//! Access control settings: roles and their policies, JWTs, the audit
//! trail and rate limits (`[security]`, `[roles.*]` in the config).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Secret;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    /// Salt of the `hash` mask (a masked column still joins to itself).
    /// Empty: a random salt is made once per lake and kept in its catalog.
    #[serde(default)]
    pub mask_salt: Secret,
    /// The longest a token may live, and the longest a temporary grant.
    #[serde(default = "default_max_token_days")]
    pub max_token_days: u32,
    #[serde(default = "default_max_grant_days")]
    pub max_grant_days: u32,
    #[serde(default)]
    pub jwt: JwtConfig,
    #[serde(default)]
    pub audit: AuditConfig,
}

fn default_max_token_days() -> u32 {
    365
}

fn default_max_grant_days() -> u32 {
    15
}

/// JSON Web Tokens signed by an identity provider.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// `HS256` or `RS256`; empty: JWTs are not accepted.
    #[serde(default)]
    pub algorithm: String,
    /// The HS256 shared secret.
    #[serde(default)]
    pub secret: Secret,
    /// A file holding the HS256 secret or the RS256 public key (PEM).
    #[serde(default)]
    pub key_file: String,
    /// Required `iss` and `aud` when set.
    #[serde(default)]
    pub issuer: String,
    #[serde(default)]
    pub audience: String,
    /// Which claims carry the principal's attributes.
    #[serde(default)]
    pub claims: JwtClaims,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtClaims {
    pub user: String,
    pub role: String,
    pub teams: String,
    pub regions: String,
    pub agent_id: String,
}

impl Default for JwtClaims {
    fn default() -> Self {
        Self {
            user: "sub".into(),
            role: "role".into(),
            teams: "teams".into(),
            regions: "regions".into(),
            agent_id: "agent_id".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Record every request and command (off only to measure its cost).
    pub enabled: bool,
    /// The local journal each record is appended and fsynced to before a
    /// response completes. Empty: `<lake>/_audit` for a lake on local disk,
    /// else `custlake-audit` in the working directory.
    pub journal_dir: String,
    /// Records moved from the journal into the `audit_log` table at once,
    /// and how often the server moves them.
    pub batch_records: usize,
    pub flush_seconds: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            journal_dir: String::new(),
            batch_records: 10_000,
            flush_seconds: 10,
        }
    }
}

/// What each sensitivity level shows a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// The value as stored.
    Clear,
    /// The field's declared mask (no mask declared: null).
    Masked,
    /// The column is not in the role's views at all.
    Absent,
}

/// A role: what its principals may read and do. Unset parts come from the
/// role it inherits from.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inherits: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Tables and views the role may read (`*` for every one), and those
    /// it may not even when `tables` has `*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny_tables: Option<Vec<String>>,
    /// Per level `L1`..`L4`: clear, masked or absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub levels: Option<BTreeMap<String, Access>>,
    /// Per field (`name` in every table, or `table.name`), overriding its level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<BTreeMap<String, Access>>,
    /// Per table, a SQL condition on its rows (the table is `t`) with
    /// `{user}`, `{agent_id}`, `{teams}` and `{regions}` standing for the
    /// principal's attributes. `*` applies to every table not named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_filters: Option<BTreeMap<String, String>>,
    /// Whether the role may send its own SQL (`POST /v1/query`, `custlake sql`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_sql: Option<bool>,
    /// Named queries the role may run (`*`: every one, `prefix*`, a name;
    /// `!pattern` takes some away again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub named_queries: Option<Vec<String>>,
    /// What else: `steward` (merge, split, undo, suspects), `tokens`,
    /// `metrics`, `ingest`, `audit` (verify and read the trail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions: Option<Vec<String>>,
    /// Result formats and the most rows one request returns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formats: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rows: Option<usize>,
    /// The longest a query of the role may run, in milliseconds (its
    /// default and the most `timeout_ms` may ask for; at most
    /// `server.max_query_timeout_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_timeout_ms: Option<u64>,
    /// Requests per second per principal, and the burst above it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_second: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}
