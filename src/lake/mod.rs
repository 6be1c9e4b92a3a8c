//! The lake: one object-store root per tier and a Delta table per declared
//! table. Untiered tables live in the hot tier; a tiered table is one Delta
//! table per tier, read as one through the watermarks in the catalog
//! (`catalog`, `tiers`; design.md §3).

pub mod catalog;
mod checkpoints;
mod failpoint;
mod files;
mod layout;
pub mod lease;
pub mod session;
mod subqueries;
pub use subqueries::PlanOnly;
pub mod tiers;
pub mod upgrade;
pub mod views;
mod warehouse;
mod write;

use std::path::Path;
use std::sync::Arc;

use datafusion::object_store::ObjectStore;
use deltalake::kernel::StructField;
use deltalake::{DeltaTable, DeltaTableError};
use url::Url;

use crate::config::{Config, Retention, S3, Tiers};
use crate::error::{Classify, ErrorKind, classify};
use crate::progress::{Progress, Silent};
use crate::schema::TableDef;

pub use checkpoints::CHECKPOINT_INTERVAL;
use checkpoints::frequent_checkpoints;
pub use failpoint::{failpoint, failpoint_fails};
pub use layout::Layout;
pub use warehouse::{OpenError, Warehouse};

pub use write::{
    BatchReceiver, Replace, UpsertOutcome, append_new, append_stream, channel_source, hot_only,
    json_rows, ordered_feed, overwrite, quote_ident, replace_where, streamable, upsert,
    upsert_chunks, upsert_leased,
};

#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    /// A tier root or table location that cannot be used as configured.
    #[error("lake location {location:?}: {message}")]
    Location { location: String, message: String },
    /// A location whose store could not be set up or reached.
    #[error("lake location {location:?}: {source}")]
    Store {
        location: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("table {table}: {source}")]
    Delta {
        table: String,
        #[source]
        source: Box<DeltaTableError>,
    },
    /// Reading or writing a table through DataFusion.
    #[error("table {table}: {source}")]
    Query {
        table: String,
        #[source]
        source: Box<datafusion::error::DataFusionError>,
    },
    #[error("table {table}: its stored schema does not match schemas/{table}.toml: {message}")]
    SchemaMismatch { table: String, message: String },
    /// A table written by an older custlake, without a column this one
    /// adds with `custlake upgrade`.
    #[error(
        "table {table} was written by an older custlake, without source_key (the integer key of a source record): run `custlake upgrade` once to add it"
    )]
    NeedsUpgrade { table: String },
    /// The catalog's store.
    #[error("catalog {what}: {source}")]
    Catalog {
        what: String,
        #[source]
        source: datafusion::object_store::Error,
    },
    /// A catalog record that does not decode.
    #[error("catalog record {path}: {source}")]
    Record {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    /// Another process changed the same record first, or took over a
    /// lease this one could not renew.
    #[error("{0}")]
    Conflict(String),
    /// A table another process holds for longer than the wait allows.
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// A broken invariant of the lake's own code.
    #[error("{0}")]
    Fault(String),
}

impl Classify for LakeError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Location { .. } => ErrorKind::Config,
            Self::Store { source, .. } => match classify(source.as_ref()) {
                ErrorKind::Internal => ErrorKind::Config,
                k => k,
            },
            Self::Delta { source, .. } => match crate::error::delta_kind(source) {
                ErrorKind::InvalidSql => ErrorKind::Internal,
                k => k,
            },
            // The lake's own statements: a planning error is a fault here,
            // not the user's SQL.
            Self::Query { source, .. } => match crate::error::datafusion_kind(source) {
                ErrorKind::InvalidSql => ErrorKind::Internal,
                k => k,
            },
            Self::SchemaMismatch { .. } | Self::Record { .. } => ErrorKind::StorageDamaged,
            Self::NeedsUpgrade { .. } => ErrorKind::Refused,
            Self::Catalog { source, .. } => match crate::error::object_store_kind(source) {
                // A record listed but gone is somebody else's prune.
                ErrorKind::StorageDamaged => ErrorKind::Conflict,
                k => k,
            },
            Self::Conflict(_) => ErrorKind::Conflict,
            Self::Busy(_) => ErrorKind::Busy,
            Self::Invalid(_) => ErrorKind::InvalidParameter,
            Self::NotFound(_) => ErrorKind::NotFound,
            Self::Fault(_) => ErrorKind::Internal,
        }
    }
}

/// A failure reading or writing one table, kept as what it is.
pub(crate) trait OnTable {
    fn on_table(self, table: &str) -> LakeError;
}

impl OnTable for datafusion::error::DataFusionError {
    fn on_table(self, table: &str) -> LakeError {
        LakeError::query(table, self)
    }
}

impl OnTable for DeltaTableError {
    fn on_table(self, table: &str) -> LakeError {
        delta_err(table, self)
    }
}

impl LakeError {
    /// A DataFusion failure reading or writing `table`.
    pub(crate) fn query(table: &str, source: datafusion::error::DataFusionError) -> Self {
        Self::Query {
            table: table.to_string(),
            source: Box::new(source),
        }
    }
}

/// The three storage tiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tier {
    Hot,
    Warm,
    Cold,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Hot, Tier::Warm, Tier::Cold];

    pub fn name(self) -> &'static str {
        match self {
            Self::Hot => "hot",
            Self::Warm => "warm",
            Self::Cold => "cold",
        }
    }

    /// This tier's settings.
    pub fn settings(self, tiers: &Tiers) -> &crate::config::TierConfig {
        match self {
            Self::Hot => &tiers.hot,
            Self::Warm => &tiers.warm,
            Self::Cold => &tiers.cold,
        }
    }
}

impl std::str::FromStr for Tier {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| format!("unknown tier {s:?}: expected hot, warm or cold"))
    }
}

/// What the lake takes from the configuration: where its tiers are, how
/// they are written, how long data is kept, how S3 is reached.
#[derive(Debug, Clone)]
pub struct LakeSettings {
    pub tiers: Tiers,
    pub retention: Retention,
    pub s3: S3,
}

/// The lake's roots, resolved from the configuration, and the object store
/// of each tier where custlake builds it itself (`memory://`, `s3://`, or a
/// store a test wraps to count or fail requests).
#[derive(Clone)]
pub struct Lake {
    settings: Arc<LakeSettings>,
    roots: [Url; 3],
    stores: [Option<Arc<dyn ObjectStore>>; 3],
    /// Who this process is, as table leases name their holder.
    holder: Arc<str>,
    /// Where notices go (a wait for a table another process holds).
    progress: Arc<dyn Progress>,
}

impl std::fmt::Debug for Lake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lake").field("roots", &self.roots).finish()
    }
}

impl Lake {
    pub fn new(config: &Config) -> Result<Self, LakeError> {
        let settings = LakeSettings {
            tiers: config.tiers.clone(),
            retention: config.retention.clone(),
            s3: config.s3.clone(),
        };
        let lake_root = to_url(&config.lake, true)?;
        let tier_url = |tier: Tier, configured: &str| -> Result<Url, LakeError> {
            if configured.trim().is_empty() {
                join(&lake_root, tier.name())
            } else {
                to_url(configured, true)
            }
        };
        let roots = [
            tier_url(Tier::Hot, &config.tiers.hot.url)?,
            tier_url(Tier::Warm, &config.tiers.warm.url)?,
            tier_url(Tier::Cold, &config.tiers.cold.url)?,
        ];
        let mut stores: [Option<Arc<dyn ObjectStore>>; 3] = [None, None, None];
        // One in-memory store per distinct memory:// root, shared by the
        // tiers that name it, for the life of this lake.
        let mut memory: Vec<(String, Arc<dyn ObjectStore>)> = Vec::new();
        for (i, root) in roots.iter().enumerate() {
            match root.scheme() {
                "file" => {}
                "memory" => {
                    let host = root.host_str().unwrap_or("").to_string();
                    let store = match memory.iter().find(|(h, _)| *h == host) {
                        Some((_, s)) => s.clone(),
                        None => {
                            let s: Arc<dyn ObjectStore> =
                                Arc::new(datafusion::object_store::memory::InMemory::new());
                            memory.push((host, s.clone()));
                            s
                        }
                    };
                    stores[i] = Some(store);
                }
                "s3" | "s3a" => stores[i] = Some(s3_store(&settings.s3, root)?),
                other => {
                    return Err(LakeError::Location {
                        location: root.to_string(),
                        message: format!(
                            "unsupported scheme {other}: use file://, s3:// or memory://"
                        ),
                    });
                }
            }
        }
        Ok(Self {
            settings: Arc::new(settings),
            roots,
            stores,
            holder: format!("custlake (process {})", std::process::id()).into(),
            progress: Arc::new(Silent),
        })
    }

    /// The same lake, naming this process `holder` in the table leases it
    /// takes (the command line gives its command).
    pub fn with_holder(mut self, holder: impl Into<String>) -> Self {
        self.holder = holder.into().into();
        self
    }

    /// The same lake, telling `progress` of waits.
    pub fn with_progress(mut self, progress: Arc<dyn Progress>) -> Self {
        self.progress = progress;
        self
    }

    pub fn settings(&self) -> &LakeSettings {
        &self.settings
    }

    pub(crate) fn holder(&self) -> &str {
        &self.holder
    }

    pub(crate) fn progress(&self) -> &dyn Progress {
        self.progress.as_ref()
    }

    pub fn root(&self, tier: Tier) -> &Url {
        &self.roots[tier as usize]
    }

    /// Put `wrap`'s store in front of a tier's (tests count and fail
    /// requests this way).
    pub fn wrap_store(
        &mut self,
        tier: Tier,
        wrap: impl FnOnce(Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore>,
    ) {
        let inner = self.store(tier).0;
        self.stores[tier as usize] = Some(wrap(inner));
    }

    /// A tier's object store (rooted at the store's root) and the path of
    /// the tier inside it.
    pub fn store(
        &self,
        tier: Tier,
    ) -> (Arc<dyn ObjectStore>, datafusion::object_store::path::Path) {
        let root = self.root(tier);
        let path =
            datafusion::object_store::path::Path::from_url_path(root.path()).unwrap_or_default();
        let store = match &self.stores[tier as usize] {
            Some(s) => s.clone(),
            None => Arc::new(datafusion::object_store::local::LocalFileSystem::new()),
        };
        (store, path)
    }

    /// Where a table lives (in the hot tier).
    pub fn table_url(&self, table: &str) -> Result<Url, LakeError> {
        self.table_url_in(table, Tier::Hot)
    }

    /// Where a table's part in a tier lives.
    pub fn table_url_in(&self, table: &str, tier: Tier) -> Result<Url, LakeError> {
        join(self.root(tier), table)
    }

    /// A builder for a table in a tier, on the tier's store.
    pub fn builder(
        &self,
        table: &str,
        tier: Tier,
    ) -> Result<deltalake::DeltaTableBuilder, LakeError> {
        let url = self.table_url_in(table, tier)?;
        let mut b = deltalake::DeltaTableBuilder::from_url(url.clone())
            .map_err(|source| delta_err(table, source))?;
        if let Some(store) = &self.stores[tier as usize] {
            b = b.with_storage_backend(store.clone(), url);
        }
        Ok(b)
    }

    /// Open a table if it has been created.
    pub async fn open(&self, def: &TableDef) -> Result<Option<DeltaTable>, LakeError> {
        self.open_in(def, Tier::Hot).await
    }

    /// Open a table's part in a tier if it has been created.
    pub async fn open_in(
        &self,
        def: &TableDef,
        tier: Tier,
    ) -> Result<Option<DeltaTable>, LakeError> {
        self.open_at(def, tier, None).await
    }

    /// Open a table's part in a tier as it was at a version or time. The
    /// current version of a table written before a column `custlake
    /// upgrade` adds is refused with [`LakeError::NeedsUpgrade`].
    pub async fn open_at(
        &self,
        def: &TableDef,
        tier: Tier,
        as_of: Option<&AsOf>,
    ) -> Result<Option<DeltaTable>, LakeError> {
        let table = self.open_stored(def, tier, as_of).await?;
        if let Some(t) = table.as_ref().filter(|_| as_of.is_none()) {
            upgrade::check(def, t)?;
        }
        Ok(table)
    }

    /// Open a table's part in a tier as stored, whatever its columns.
    async fn open_stored(
        &self,
        def: &TableDef,
        tier: Tier,
        as_of: Option<&AsOf>,
    ) -> Result<Option<DeltaTable>, LakeError> {
        let url = self.table_url_in(&def.name, tier)?;
        if url.scheme() == "file" && self.stores[tier as usize].is_none() {
            let path = url.to_file_path().map_err(|_| LakeError::Location {
                location: url.to_string(),
                message: "not a local path".into(),
            })?;
            if !path.join("_delta_log").exists() {
                return Ok(None);
            }
        } else {
            use futures::StreamExt;
            let (store, path) = self.store(tier);
            let log = path.clone().join(def.name.as_str()).join("_delta_log");
            let first = store.list(Some(&log)).next().await;
            match first {
                None => return Ok(None),
                Some(Err(e)) => return Err(delta_err(&def.name, e.into())),
                Some(Ok(_)) => {}
            }
        }
        let mut b = self.builder(&def.name, tier)?;
        match as_of {
            None => {}
            Some(AsOf::Version(v)) => b = b.with_version(u64::try_from(*v).unwrap_or(0)),
            Some(AsOf::Time(t)) => b = b.with_timestamp(*t),
        }
        let table = match b.load().await {
            Ok(t) => t,
            // Created after the time asked for: it did not exist then.
            Err(DeltaTableError::InvalidVersion(_)) if as_of.is_some() => return Ok(None),
            Err(e) if as_of.is_some() && e.to_string().contains("earliest") => return Ok(None),
            Err(source) => return Err(delta_err(&def.name, source)),
        };
        Ok(table.version().is_some().then_some(table))
    }

    /// Open a table's part in a tier, creating it empty if need be.
    pub async fn open_or_create_in(
        &self,
        def: &TableDef,
        tier: Tier,
    ) -> Result<DeltaTable, LakeError> {
        let mut replace = false;
        if let Some(t) = self.open_in(def, tier).await? {
            match check_schema(def, &t) {
                Ok(()) => return frequent_checkpoints(&def.name, t).await,
                // A table an older declaration made and nothing has written
                // yet takes the current one (one commit, nothing lost);
                // one holding rows keeps its error.
                Err(e) if t.snapshot().is_ok_and(|s| s.log_data().num_files() == 0) => {
                    tracing::info!(table = %def.name, error = %e, "empty table re-created with its current declaration");
                    replace = true;
                }
                Err(e) => return Err(e),
            }
        }
        let url = self.table_url_in(&def.name, tier)?;
        if url.scheme() == "file"
            && let Ok(path) = url.to_file_path()
        {
            std::fs::create_dir_all(&path).map_err(|e| LakeError::Store {
                location: path.display().to_string(),
                source: Box::new(e),
            })?;
        }
        let table = self
            .builder(&def.name, tier)?
            .build()
            .map_err(|source| delta_err(&def.name, source))?;
        let columns = delta_columns(def)?;
        let mode = if replace {
            deltalake::protocol::SaveMode::Overwrite
        } else {
            deltalake::protocol::SaveMode::Ignore
        };
        let mut create = table
            .create()
            .with_table_name(&def.name)
            .with_comment(&def.description)
            .with_columns(columns)
            .with_configuration_property(
                deltalake::TableProperty::CheckpointInterval,
                Some(CHECKPOINT_INTERVAL.to_string()),
            )
            .with_save_mode(mode);
        if let Some(p) = &def.partition {
            create = create.with_partition_columns([p.column.clone()]);
        }
        create.await.map_err(|source| delta_err(&def.name, source))
    }

    /// Open a table, creating it empty (with its declared schema and
    /// partitioning) and checkpointed every [`CHECKPOINT_INTERVAL`] commits,
    /// if it does not exist yet.
    pub async fn open_or_create(&self, def: &TableDef) -> Result<DeltaTable, LakeError> {
        self.open_or_create_in(def, Tier::Hot).await
    }

    /// Remove whatever an aborted first write left at a table's location,
    /// provided the table was never created (no `_delta_log`): uncommitted
    /// data files are invisible to readers, but nothing should remain.
    pub async fn remove_uncommitted(&self, def: &TableDef) -> Result<(), LakeError> {
        let table = self
            .builder(&def.name, Tier::Hot)?
            .build()
            .map_err(|source| delta_err(&def.name, source))?;
        let store = table.object_store();
        let files = list_all(store.as_ref(), &def.name).await?;
        if files
            .iter()
            .any(|f| f.location.as_ref().starts_with("_delta_log"))
        {
            return Ok(());
        }
        for f in files {
            delete(store.as_ref(), &def.name, &f.location).await?;
        }
        Ok(())
    }

    /// Remove the data files of a write that was aborted after the table
    /// existed: files under the table that its log does not name and that
    /// were written since `since`. Only for a caller holding the table's
    /// lease (no other writer can have files in flight there).
    pub async fn remove_unreferenced(
        &self,
        def: &TableDef,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<usize, LakeError> {
        if self.open(def).await?.is_none() {
            return self.remove_uncommitted(def).await.map(|()| 0);
        }
        self.remove_unreferenced_in(def, Tier::Hot, since).await
    }

    /// [`Self::remove_unreferenced`] in one tier's table (none if it does
    /// not exist).
    pub async fn remove_unreferenced_in(
        &self,
        def: &TableDef,
        tier: Tier,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<usize, LakeError> {
        let Some(table) = self.open_stored(def, tier, None).await? else {
            return Ok(0);
        };
        let named: std::collections::HashSet<String> = table
            .snapshot()
            .map_err(|source| delta_err(&def.name, source))?
            .log_data()
            .iter()
            .map(|f| f.path().to_string())
            .collect();
        let store = table.object_store();
        let files = list_all(store.as_ref(), &def.name).await?;
        let mut removed = 0;
        for f in files {
            let path = f.location.as_ref();
            if path.starts_with("_delta_log") || f.last_modified < since || named.contains(path) {
                continue;
            }
            delete(store.as_ref(), &def.name, &f.location).await?;
            removed += 1;
        }
        Ok(removed)
    }
}

/// A point in a table's history: a Delta version, or a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AsOf {
    Version(i64),
    Time(chrono::DateTime<chrono::Utc>),
}

impl AsOf {
    /// The time a timestamp points at (`None` for a version number).
    pub fn time(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        match self {
            Self::Time(t) => Some(*t),
            Self::Version(_) => None,
        }
    }
}

impl std::str::FromStr for AsOf {
    type Err = String;
    /// `VERSION` (a number), an RFC 3339 timestamp, or a date (its end).
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(v) = s.parse::<i64>() {
            return if v >= 0 {
                Ok(Self::Version(v))
            } else {
                Err(format!("--as-of {s}: a version is 0 or more"))
            };
        }
        if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
            return Ok(Self::Time(t.with_timezone(&chrono::Utc)));
        }
        if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
            let end = d.and_hms_opt(23, 59, 59).unwrap_or_default();
            return Ok(Self::Time(end.and_utc()));
        }
        Err(format!(
            "--as-of {s:?}: expected a version number, an RFC 3339 timestamp (2026-11-01T09:00:00Z) or a date (2026-11-01)"
        ))
    }
}

/// The object store of an `s3://` tier root (any S3-compatible store):
/// endpoint, region and credentials from `[s3]` in the config, else from
/// the AWS environment variables. Delta commits use conditional puts
/// (`If-None-Match: *`), which the store must support.
fn s3_store(s3: &S3, root: &Url) -> Result<Arc<dyn ObjectStore>, LakeError> {
    use datafusion::object_store::aws::AmazonS3Builder;
    let bucket = root.host_str().ok_or_else(|| LakeError::Location {
        location: root.to_string(),
        message: "an s3:// root names a bucket: s3://bucket/prefix".into(),
    })?;
    let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
    if !s3.endpoint.is_empty() {
        b = b.with_endpoint(&s3.endpoint);
    }
    if !s3.region.is_empty() {
        b = b.with_region(&s3.region);
    }
    if !s3.access_key_id.is_empty() {
        b = b.with_access_key_id(&s3.access_key_id);
    }
    if !s3.secret_access_key.expose().is_empty() {
        b = b.with_secret_access_key(s3.secret_access_key.expose());
    }
    if s3.allow_http {
        b = b.with_allow_http(true);
    }
    let store = b.build().map_err(|e| LakeError::Store {
        location: root.to_string(),
        source: Box::new(e),
    })?;
    // Delta needs a log store for the scheme; the default one commits with
    // put-if-absent on the store given to it.
    static REGISTER: std::sync::Once = std::sync::Once::new();
    REGISTER.call_once(|| {
        for scheme in ["s3://", "s3a://"] {
            if let Ok(u) = Url::parse(scheme) {
                deltalake::logstore::logstore_factories().insert(u, Arc::new(PlainLogStore));
            }
        }
    });
    Ok(Arc::new(store))
}

/// Delta's default log store (commits by put-if-absent), for schemes whose
/// store custlake builds itself.
struct PlainLogStore;

impl deltalake::logstore::LogStoreFactory for PlainLogStore {
    fn with_options(
        &self,
        prefixed_store: deltalake::logstore::ObjectStoreRef,
        root_store: deltalake::logstore::ObjectStoreRef,
        location: &Url,
        options: &deltalake::logstore::StorageConfig,
    ) -> deltalake::DeltaResult<Arc<dyn deltalake::logstore::LogStore>> {
        Ok(deltalake::logstore::default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

fn delta_columns(def: &TableDef) -> Result<Vec<StructField>, LakeError> {
    use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
    def.arrow_schema()
        .fields()
        .iter()
        .map(|f| {
            f.as_ref()
                .try_into_kernel()
                .map_err(|e| LakeError::SchemaMismatch {
                    table: def.name.clone(),
                    message: e.to_string(),
                })
        })
        .collect()
}

fn check_schema(def: &TableDef, table: &DeltaTable) -> Result<(), LakeError> {
    let snapshot = table
        .snapshot()
        .map_err(|source| delta_err(&def.name, source))?;
    let stored: Vec<String> = snapshot
        .schema()
        .fields()
        .map(|f| f.name().to_string())
        .collect();
    let declared: Vec<String> = def.fields.iter().map(|f| f.name.clone()).collect();
    if stored != declared {
        return Err(LakeError::SchemaMismatch {
            table: def.name.clone(),
            message: format!("stored columns {stored:?}, declared {declared:?}"),
        });
    }
    Ok(())
}

fn delta_err(table: &str, source: DeltaTableError) -> LakeError {
    LakeError::Delta {
        table: table.to_string(),
        source: Box::new(source),
    }
}

/// A path or URL as a directory URL (local paths are made absolute).
/// Every object under a table's store.
async fn list_all(
    store: &dyn ObjectStore,
    table: &str,
) -> Result<Vec<deltalake::ObjectMeta>, LakeError> {
    use futures::TryStreamExt;
    store
        .list(None)
        .try_collect()
        .await
        .map_err(|e| delta_err(table, e.into()))
}

/// Delete one object of a table's store.
async fn delete(
    store: &dyn ObjectStore,
    table: &str,
    location: &datafusion::object_store::path::Path,
) -> Result<(), LakeError> {
    use datafusion::object_store::ObjectStoreExt;
    store
        .delete(location)
        .await
        .map_err(|e| delta_err(table, e.into()))
}

pub fn to_url(location: &str, dir: bool) -> Result<Url, LakeError> {
    let bad = |message: String| LakeError::Location {
        location: location.to_string(),
        message,
    };
    if location.contains("://") {
        let mut url = Url::parse(location).map_err(|e| LakeError::Store {
            location: location.to_string(),
            source: Box::new(e),
        })?;
        if dir && !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        return Ok(url);
    }
    let path = Path::new(location);
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| bad(e.to_string()))?
            .join(path)
    };
    let url = if dir {
        Url::from_directory_path(&abs)
    } else {
        Url::from_file_path(&abs)
    };
    url.map_err(|_| bad("not a valid path".into()))
}

fn join(root: &Url, child: &str) -> Result<Url, LakeError> {
    root.join(&format!("{child}/"))
        .map_err(|e| LakeError::Store {
            location: format!("{root}{child}"),
            source: Box::new(e),
        })
}
