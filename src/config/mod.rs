//! Typed, layered configuration: the embedded `default.toml`, then an
//! optional `custlake.toml`, then `CUSTLAKE__SECTION__KEY` environment
//! variables, then command-line flags.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

mod analytics;
mod security;

pub use analytics::{AnalyticsConfig, CrossSell, MemoryPool};
pub use security::{Access, AuditConfig, JwtClaims, JwtConfig, RoleConfig, SecurityConfig};

/// The data-quality dimensions.
pub const DIMENSIONS: [&str; 6] = [
    "completeness",
    "validity",
    "accuracy",
    "consistency",
    "uniqueness",
    "timeliness",
];

pub(crate) const DEFAULT_TOML: &str = include_str!("default.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Invalid(String),
    #[error("configuration file {path}: {message}")]
    File { path: PathBuf, message: String },
}

impl crate::error::Classify for ConfigError {
    fn kind(&self) -> crate::error::ErrorKind {
        crate::error::ErrorKind::Config
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Lake root: local path or URL.
    pub lake: String,
    pub tiers: Tiers,
    pub retention: Retention,
    pub s3: S3,
    pub ingest: IngestConfig,
    pub query: QueryConfig,
    pub server: ServerConfig,
    pub security: SecurityConfig,
    pub analytics: AnalyticsConfig,
    pub quality: QualityConfig,
    pub scheduler: SchedulerConfig,
    /// Roles by name (shipped defaults in default.toml).
    pub roles: std::collections::BTreeMap<String, RoleConfig>,
    /// Where the settings came from, in the order applied (not a setting).
    #[serde(skip)]
    pub sources: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tiers {
    /// How long a load or `tier apply` waits for another one holding the
    /// same tiered table before giving up with an error.
    #[serde(default = "default_lock_wait")]
    pub lock_wait_seconds: u64,
    /// `tier apply` rewrites a tier's partition holding at least this
    /// many small files (under half the tier's target size) as files of
    /// that size, its rows sorted by the table's cluster order (0: never).
    #[serde(default = "default_compact_min_files")]
    pub compact_min_files: u64,
    pub hot: TierConfig,
    pub warm: TierConfig,
    pub cold: TierConfig,
}

fn default_lock_wait() -> u64 {
    900
}

fn default_compact_min_files() -> u64 {
    16
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    /// Object-store root of the tier; empty = `<lake>/<tier>`.
    pub url: String,
    pub moves_in_after_months: u32,
    /// Parquet compression: `zstd(N)`, `snappy`, `lz4` or `none`.
    pub compression: String,
    pub target_file_mb: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    pub years: u32,
    /// Per-table overrides of `years`.
    #[serde(default)]
    pub tables: std::collections::BTreeMap<String, u32>,
    /// How long files a move removed stay on disk for readers that started
    /// before it (and for time travel), before they are vacuumed. (Purged
    /// files are vacuumed at once.)
    #[serde(default = "default_vacuum_grace")]
    pub vacuum_grace_minutes: u32,
}

fn default_vacuum_grace() -> u32 {
    60
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3 {
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub allow_http: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    pub batch_rows: usize,
    pub staging_dir: String,
    /// The largest record (a CSV record, a JSON line) read whole, in KiB;
    /// a longer one is quarantined and reading resumes at the next line.
    #[serde(default = "default_max_record_kb")]
    pub max_record_kb: usize,
    /// The largest field of a record, in KiB; a record with a longer one is
    /// quarantined.
    #[serde(default = "default_max_field_kb")]
    pub max_field_kb: usize,
}

fn default_max_record_kb() -> usize {
    1024
}

fn default_max_field_kb() -> usize {
    256
}

/// The jobs `custlake serve` runs on a schedule (`custlake jobs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerConfig {
    /// Whether `serve` runs the jobs (`custlake jobs run` works either way).
    pub enabled: bool,
    /// The UTC offset the cron expressions are read in (`+08:00`).
    pub utc_offset: String,
    /// Each job's schedule, by job name (see [`JOBS`]).
    pub jobs: std::collections::BTreeMap<String, JobConfig>,
}

/// The jobs there are.
pub const JOBS: [&str; 5] = ["ingest", "quality", "reports", "score", "tier"];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// `sec min hour day-of-month month day-of-week [year]`.
    pub cron: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The `ingest` job's directory (DIR/<source_system>/<file>).
    #[serde(default)]
    pub dir: String,
}

fn yes() -> bool {
    true
}

impl SchedulerConfig {
    /// The offset the cron expressions are read in.
    pub fn offset(&self) -> chrono::FixedOffset {
        self.utc_offset
            .parse()
            .unwrap_or_else(|_| chrono::FixedOffset::east_opt(0).expect("UTC"))
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.utc_offset.parse::<chrono::FixedOffset>().is_err() {
            return Err(ConfigError::Invalid(format!(
                "scheduler.utc_offset {:?}: give an offset such as +08:00",
                self.utc_offset
            )));
        }
        for (name, job) in &self.jobs {
            if !JOBS.contains(&name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "scheduler.jobs.{name}: the jobs are {}",
                    JOBS.join(", ")
                )));
            }
            if let Err(e) = job.cron.parse::<cron::Schedule>() {
                return Err(ConfigError::Invalid(format!(
                    "scheduler.jobs.{name}.cron {:?}: {e} (sec min hour day-of-month month day-of-week [year])",
                    job.cron
                )));
            }
            if name == "ingest" && job.enabled && job.dir.is_empty() {
                return Err(ConfigError::Invalid(
                    "scheduler.jobs.ingest is enabled without a dir to pick files up from".into(),
                ));
            }
        }
        Ok(())
    }
}

/// The data-quality rules' settings: which tables are checked and whose
/// records they are, the dimensions' weights, the work-order threshold and
/// how often each sensitivity level is checked on how large a sample.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualityConfig {
    /// A record (or team) scoring below this is a rectification work order
    /// (a team below it this many runs in a row is escalated).
    pub threshold: f64,
    pub escalate_after: u32,
    /// A record is timely when it landed within this many days of its
    /// `updated_at` in the source.
    pub timeliness_days: u32,
    /// The role whose view of a failing value `quality_issue.value` keeps.
    pub issue_values_as: String,
    /// Fields of `source_customer` compared with the golden record.
    pub consistency_fields: Vec<String>,
    /// Weight of each dimension in a record's, table's, source's and team's
    /// overall score.
    pub weights: std::collections::BTreeMap<String, f64>,
    /// Per sensitivity level (L1..L4): how often a scheduled run checks its
    /// fields and what share of records it samples.
    pub sampling: std::collections::BTreeMap<String, Sampling>,
    /// The tables checked, each with SQL expressions over its row `t` (and
    /// `s`, its customer's source record, for tables with
    /// `source_customer_id`) for the record's source system, owning team
    /// and entering agent, and an optional condition on the rows checked.
    pub tables: std::collections::BTreeMap<String, QualityTable>,
    /// Accuracy: fields of a checked table compared with an authoritative
    /// reference table loaded as its own source, matched on a key.
    #[serde(default)]
    pub accuracy: Vec<Accuracy>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Accuracy {
    pub table: String,
    pub reference: String,
    /// The table's field and the reference's field that match a record.
    pub key: String,
    pub reference_key: String,
    /// The table's field → the reference's field it must agree with.
    pub fields: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sampling {
    /// Share of records checked, 0 < rate <= 1.
    pub rate: f64,
    /// day, week, month or quarter: a level is due when no run checked it
    /// in the current period.
    pub every: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualityTable {
    #[serde(default = "default_quality_source")]
    pub source: String,
    pub team: String,
    #[serde(default = "default_quality_agent")]
    pub agent: String,
    #[serde(default)]
    pub filter: String,
}

fn default_quality_source() -> String {
    "t.source_system".into()
}

fn default_quality_agent() -> String {
    "NULL".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryConfig {
    pub target_partitions: usize,
    pub memory_limit_mb: u64,
    /// Memory for Parquet footers and page indexes kept between queries
    /// (a lookup then decodes no file metadata).
    #[serde(default = "default_metadata_cache_mb")]
    pub metadata_cache_mb: u64,
    /// Memory for the key indexes of lookup columns (8 bytes a row of
    /// each indexed column; 0: no indexes, lookups read bloom filters).
    #[serde(default = "default_key_index_mb")]
    pub key_index_mb: u64,
    /// Memory for decoded rows of lookup tables, read in chunks of a page
    /// by the lookups the key indexes serve and kept for the next (0: none).
    #[serde(default = "default_row_cache_mb")]
    pub row_cache_mb: u64,
    /// The longest statement accepted, in bytes.
    #[serde(default = "default_statement_bytes")]
    pub max_statement_bytes: usize,
    /// The deepest nesting of expressions and set operations accepted
    /// (`1+1+…+1` with N terms is N deep).
    #[serde(default = "default_expression_depth")]
    pub max_expression_depth: usize,
    /// The largest result a size-making function (`repeat`, `lpad`,
    /// `range`, `array_repeat`, …) may build in one call, and (times four)
    /// in all its calls on constants while a statement is planned.
    #[serde(default = "default_value_mb")]
    pub max_value_mb: u64,
    /// The most relations (tables, views, subqueries, VALUES lists, table
    /// functions) one statement may read: planning time grows fast with
    /// the joins, and planning cannot be cut by the query's timeout.
    #[serde(default = "default_relations")]
    pub max_relations: usize,
    /// Function calls nested inside each other's arguments, at most: the
    /// SQL parser's time doubles with each level (`coalesce(coalesce(…))`).
    #[serde(default = "default_call_depth")]
    pub max_call_depth: usize,
    /// A statement nested deeper than this is planned first in a child
    /// process (`custlake plan-check`), which may die where the server
    /// must not; 0: never.
    #[serde(default = "default_sandbox_depth")]
    pub sandbox_depth: usize,
    /// The child's planning stack, in KiB (half a worker's: a margin).
    #[serde(default = "default_sandbox_stack_kb")]
    pub sandbox_stack_kb: usize,
    /// The binary run as the child; empty: this one.
    #[serde(default)]
    pub sandbox_bin: String,
}

fn default_sandbox_depth() -> usize {
    64
}

fn default_sandbox_stack_kb() -> usize {
    THREAD_STACK / 2 / 1024
}

/// Stack of every runtime thread. Planning and executing a query recurse
/// once per level of its expression trees; statements are checked against
/// `query.max_expression_depth` first, and this leaves a wide margin above
/// what that depth needs (address space is reserved; only what is touched
/// is used).
pub const THREAD_STACK: usize = 16 << 20;

fn default_relations() -> usize {
    64
}

fn default_metadata_cache_mb() -> u64 {
    512
}

fn default_key_index_mb() -> u64 {
    1024
}

fn default_row_cache_mb() -> u64 {
    1024
}

fn default_statement_bytes() -> usize {
    262_144
}

fn default_expression_depth() -> usize {
    256
}

fn default_value_mb() -> u64 {
    64
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub bind: String,
    pub default_row_limit: usize,
    pub max_row_limit: usize,
    pub query_timeout_ms: u64,
    pub min_query_timeout_ms: u64,
    pub max_query_timeout_ms: u64,
    pub max_concurrent_queries: usize,
    /// Of those, the most one user may run at once (over HTTP, PG and
    /// Flight SQL together): one user cannot take every slot. 0: half of
    /// `max_concurrent_queries` (at least one).
    #[serde(default)]
    pub max_queries_per_user: usize,
    pub body_limit_bytes: usize,
    pub shutdown_grace_ms: u64,
    /// A request's head must arrive within this; an idle connection is
    /// closed after it.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout_ms: u64,
    /// Connections open at once; more are answered 429 and closed.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A request's body must arrive within this once its head has.
    #[serde(default = "default_io_timeout")]
    pub body_read_timeout_ms: u64,
    /// A reply the client stops reading: once no byte could be written
    /// for this long, the connection is closed.
    #[serde(default = "default_io_timeout")]
    pub write_timeout_ms: u64,
    #[serde(default)]
    pub tls: TlsConfig,
    /// The PostgreSQL wire protocol's address; empty: not served.
    #[serde(default)]
    pub pg_bind: String,
    /// PostgreSQL connections open at once; more are refused (53300).
    #[serde(default = "default_pg_max_connections")]
    pub pg_max_connections: usize,
    /// Arrow Flight SQL's address; empty: not served.
    #[serde(default)]
    pub flight_bind: String,
    /// Where a principal's statements run: `local` (this process) or
    /// `ballista` (the cluster whose scheduler is `scheduler_url`).
    #[serde(default)]
    pub engine: Engine,
    /// The Ballista scheduler, `HOST:PORT`, for `engine = "ballista"`.
    #[serde(default)]
    pub scheduler_url: String,
}

/// Where statements run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// In the process that plans them.
    #[default]
    Local,
    /// On an Apache Ballista cluster (`server.scheduler_url`).
    Ballista,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Ballista => "ballista",
        }
    }
}

fn default_call_depth() -> usize {
    12
}

fn default_pg_max_connections() -> usize {
    64
}

/// HTTPS for the server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain and private key; both empty: plain HTTP.
    pub cert_file: String,
    pub key_file: String,
    /// `1.3` (default) or `1.2`; nothing older is ever offered.
    pub min_version: String,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert_file: String::new(),
            key_file: String::new(),
            min_version: "1.3".into(),
        }
    }
}

fn default_header_read_timeout() -> u64 {
    10_000
}

fn default_io_timeout() -> u64 {
    30_000
}

fn default_max_connections() -> usize {
    256
}

/// A value that never prints: `Debug` and `custlake config print` show
/// `***` when it is set.
#[derive(Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn redacted(&self) -> &'static str {
        if self.0.is_empty() { "" } else { "***" }
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.redacted())
    }
}

/// Overrides from the command line (the last layer).
#[derive(Debug, Default, Clone, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lake: Option<String>,
}

impl Config {
    /// Load every layer. `file` is the explicit `--config` path; without it
    /// `./custlake.toml` is used when present.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Toml::string(DEFAULT_TOML));
        let mut sources = vec!["the embedded defaults".to_string()];
        let file = match file {
            Some(path) => {
                if !path.exists() {
                    return Err(ConfigError::File {
                        path: path.to_path_buf(),
                        message: "does not exist".into(),
                    });
                }
                Some(path.to_path_buf())
            }
            None => Some(PathBuf::from("custlake.toml")).filter(|p| p.exists()),
        };
        if let Some(path) = &file {
            check_owner_only_writes(path)?;
            fig = fig.merge(Toml::file_exact(path));
            let shown = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
            tracing::info!(file = %shown.display(), "configuration file loaded");
            sources.push(shown.display().to_string());
        }
        let env: Vec<String> = std::env::vars()
            .map(|(k, _)| k)
            .filter(|k| k.starts_with("CUSTLAKE__"))
            .collect();
        if !env.is_empty() {
            sources.push(format!("environment: {}", env.join(", ")));
        }
        fig = fig
            .merge(Env::prefixed("CUSTLAKE__").split("__").lowercase(true))
            .merge(Serialized::defaults(overrides));
        let mut config: Config = fig
            .extract()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        config.sources = sources;
        config.check()?;
        Ok(config)
    }

    /// The defaults alone (tests and examples).
    pub fn embedded() -> Self {
        let mut c: Self = Figment::from(Toml::string(DEFAULT_TOML))
            .extract()
            .unwrap_or_else(|e| panic!("the embedded default.toml is invalid: {e}"));
        c.sources = vec!["the embedded defaults".into()];
        c
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.lake.trim().is_empty() {
            return Err(ConfigError::Invalid("lake must not be empty".into()));
        }
        for (name, t) in [
            ("hot", &self.tiers.hot),
            ("warm", &self.tiers.warm),
            ("cold", &self.tiers.cold),
        ] {
            parse_compression(&t.compression)
                .map_err(|e| ConfigError::Invalid(format!("tiers.{name}.compression: {e}")))?;
        }
        if self.tiers.warm.moves_in_after_months >= self.tiers.cold.moves_in_after_months {
            return Err(ConfigError::Invalid(
                "tiers.warm.moves_in_after_months must be less than tiers.cold.moves_in_after_months".into(),
            ));
        }
        for (name, role) in &self.roles {
            if let Some(parent) = &role.inherits
                && !self.roles.contains_key(parent)
            {
                return Err(ConfigError::Invalid(format!(
                    "roles.{name}.inherits names {parent:?}, which is not a role"
                )));
            }
        }
        if self.server.engine == Engine::Ballista && self.server.scheduler_url.trim().is_empty() {
            return Err(ConfigError::Invalid(
                "server.engine = \"ballista\" needs server.scheduler_url (HOST:PORT of the scheduler)"
                    .into(),
            ));
        }
        let tls = &self.server.tls;
        if tls.cert_file.is_empty() != tls.key_file.is_empty() {
            return Err(ConfigError::Invalid(
                "server.tls needs both cert_file and key_file (or neither)".into(),
            ));
        }
        if !matches!(tls.min_version.as_str(), "1.2" | "1.3") {
            return Err(ConfigError::Invalid(format!(
                "server.tls.min_version {:?}: use 1.3 or 1.2",
                tls.min_version
            )));
        }
        let q = &self.quality;
        if !(0.0..=100.0).contains(&q.threshold) {
            return Err(ConfigError::Invalid(
                "quality.threshold must be between 0 and 100".into(),
            ));
        }
        for (level, s) in &q.sampling {
            if !matches!(level.as_str(), "L1" | "L2" | "L3" | "L4") {
                return Err(ConfigError::Invalid(format!(
                    "quality.sampling.{level}: levels are L1, L2, L3 and L4"
                )));
            }
            if !(s.rate > 0.0 && s.rate <= 1.0) {
                return Err(ConfigError::Invalid(format!(
                    "quality.sampling.{level}.rate must be more than 0 and at most 1"
                )));
            }
            if !matches!(s.every.as_str(), "day" | "week" | "month" | "quarter") {
                return Err(ConfigError::Invalid(format!(
                    "quality.sampling.{level}.every {:?}: use day, week, month or quarter",
                    s.every
                )));
            }
        }
        for (d, w) in &q.weights {
            if !crate::config::DIMENSIONS.contains(&d.as_str()) || w.is_nan() || *w < 0.0 {
                return Err(ConfigError::Invalid(format!(
                    "quality.weights.{d}: dimensions are {} with weights of 0 or more",
                    crate::config::DIMENSIONS.join(", ")
                )));
            }
        }
        self.scheduler.check()?;
        if self.ingest.batch_rows == 0 {
            return Err(ConfigError::Invalid(
                "ingest.batch_rows must be positive".into(),
            ));
        }
        Ok(())
    }

    /// The effective configuration as TOML with secrets hidden, after a
    /// comment naming where it came from.
    pub fn to_redacted_toml(&self) -> String {
        let mut shown = self.clone();
        shown.s3.secret_access_key = Secret(self.s3.secret_access_key.redacted().to_string());
        shown.security.mask_salt = Secret(self.security.mask_salt.redacted().to_string());
        shown.security.jwt.secret = Secret(self.security.jwt.secret.redacted().to_string());
        let mut out = String::new();
        for s in &self.sources {
            out.push_str(&format!("# loaded from {s}\n"));
        }
        out.push_str(
            &toml::to_string_pretty(&shown)
                .unwrap_or_else(|e| format!("# cannot print config: {e}\n")),
        );
        out
    }
}

/// A configuration file anyone can write could redirect the lake or hand
/// over its credentials: refused (one its group can write is warned of).
fn check_owner_only_writes(path: &Path) -> Result<(), ConfigError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|e| ConfigError::File {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let mode = meta.permissions().mode();
        if mode & 0o002 != 0 {
            return Err(ConfigError::File {
                path: path.to_path_buf(),
                message: format!(
                    "is writable by everyone (mode {:o}); make it writable by its owner only (chmod go-w)",
                    mode & 0o777
                ),
            });
        }
        if mode & 0o020 != 0 {
            tracing::warn!(file = %path.display(), mode = format!("{:o}", mode & 0o777), "the configuration file is writable by its group");
        }
    }
    Ok(())
}

/// Parquet compression from its config spelling.
pub fn parse_compression(s: &str) -> Result<datafusion::parquet::basic::Compression, String> {
    use datafusion::parquet::basic::{Compression, ZstdLevel};
    let s = s.trim().to_ascii_lowercase();
    Ok(match s.as_str() {
        "none" | "uncompressed" => Compression::UNCOMPRESSED,
        "snappy" => Compression::SNAPPY,
        "lz4" => Compression::LZ4_RAW,
        _ => {
            let level = s
                .strip_prefix("zstd(")
                .and_then(|r| r.strip_suffix(')'))
                .and_then(|n| n.parse::<i32>().ok())
                .ok_or_else(|| {
                    format!("unknown compression {s:?}: use zstd(N), snappy, lz4 or none")
                })?;
            Compression::ZSTD(ZstdLevel::try_new(level).map_err(|e| e.to_string())?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_default_parses_and_is_valid() {
        let c = Config::embedded();
        c.check().unwrap();
        assert_eq!(c.lake, "data/lake");
        assert_eq!(c.tiers.warm.moves_in_after_months, 13);
        assert_eq!(c.tiers.cold.moves_in_after_months, 25);
        assert_eq!(c.retention.years, 10);
    }

    #[test]
    fn secrets_never_print() {
        let mut c = Config::embedded();
        c.s3.secret_access_key = Secret("hunter2".into());
        let text = c.to_redacted_toml();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("***"));
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn compression_spellings() {
        assert!(parse_compression("zstd(3)").is_ok());
        assert!(parse_compression("snappy").is_ok());
        assert!(parse_compression("zstd(99)").is_err());
        assert!(parse_compression("gzip9").is_err());
    }
}
