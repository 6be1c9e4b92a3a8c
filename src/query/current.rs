//! The lake's tables as they are now, for a long-lived process (the
//! server): a cache of each table's layout and provider, and a schema that
//! brings a table up to date only when a statement names it.
//!
//! Every query sees every commit that finished before it began: a table is
//! checked for newer commits by the first query that names it after
//! another query's check began. Queries that arrive while a check runs
//! wait for it and take its answer (it began after they did), so a burst
//! of lookups costs one check per table, not one per lookup.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::execution::SessionState;
use datafusion::execution::runtime_env::RuntimeEnv;

use super::{QueryError, built_table, empty_table, provider};
use crate::lake::session::Text;
use crate::lake::{Lake, Layout};
use crate::schema::TableDef;

/// A table's layout and, once built, its provider.
type Cached = (Layout, Option<Arc<dyn TableProvider>>);

/// One table's cache entry and when its last check for commits began.
#[derive(Default)]
struct Entry {
    cached: Option<Cached>,
    checked: Option<Instant>,
    /// [`TableCache::changes`] as this table last changed.
    changed: u64,
}

/// Tables and their providers kept between queries. A query checks each
/// table it reads for a newer commit instead of replaying the whole log,
/// and reuses the provider while the version is unchanged; a newer commit
/// is applied incrementally, so new data is visible to the next query.
#[derive(Default)]
pub struct TableCache {
    tables: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Entry>>>>,
    /// The version of each lookup table whose files' page indexes are in
    /// the runtime's metadata cache.
    warmed: Mutex<HashMap<String, u64>>,
    /// How many times a table was opened or brought to a newer version: a
    /// plan kept for later is kept only if no table changed while it was
    /// planned (see [`TableCache::changes`]).
    changes: std::sync::atomic::AtomicU64,
}

impl TableCache {
    fn warmed(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.warmed.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn entry(&self, name: &str) -> Arc<tokio::sync::Mutex<Entry>> {
        let mut tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        tables.entry(name.to_string()).or_default().clone()
    }

    /// The versions of `names` as the last query saw them; `None` if one
    /// of them has not been read yet or has no fixed version (a tiered
    /// table whose rows have started to move).
    pub async fn versions(&self, names: &[String]) -> Option<String> {
        let mut out = String::new();
        for n in names {
            let entry = self.entry(n);
            let entry = entry.lock().await;
            let v = entry.cached.as_ref()?.0.version()?;
            out.push_str(&format!("{n}@{v};"));
        }
        Some(out)
    }

    /// A number that grows whenever a table is opened or brought to a newer
    /// version. Taken before planning a statement, it tells by
    /// [`TableCache::changed_since`] whether the tables the plan holds
    /// are at the versions [`TableCache::versions`] gives.
    pub fn changes(&self) -> u64 {
        self.changes.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn bump(&self) -> u64 {
        self.changes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1
    }

    /// Whether any of `names` was opened or brought to a newer version
    /// after [`TableCache::changes`] was `at`.
    pub async fn changed_since(&self, names: &[String], at: u64) -> bool {
        for n in names {
            if self.entry(n).lock().await.changed > at {
                return true;
            }
        }
        false
    }

    /// Bring the tables `defs` up to date with every commit made before
    /// `since` (as a statement naming them would).
    pub(crate) async fn refresh(
        &self,
        lake: &Lake,
        defs: &[&TableDef],
        since: Instant,
    ) -> Result<(), QueryError> {
        for def in defs {
            self.current(lake, def, since).await?;
        }
        Ok(())
    }

    /// `def`'s table with every commit made before `since`: its layout and
    /// provider (`None`: the table does not exist).
    pub(crate) async fn current(
        &self,
        lake: &Lake,
        def: &TableDef,
        since: Instant,
    ) -> Result<Cached, QueryError> {
        let entry = self.entry(&def.name);
        let mut entry = entry.lock().await;
        if let (Some(cached), Some(checked)) = (&entry.cached, entry.checked)
            && checked >= since
        {
            return Ok(cached.clone());
        }
        let began = Instant::now();
        let mut changed = false;
        let result = match entry.cached.as_mut() {
            Some(cached) => async {
                if lake.refresh(def, &mut cached.0).await? {
                    changed = true;
                    cached.1 = provider(lake, def, &cached.0, Text::Plain).await?;
                }
                Ok::<_, QueryError>(())
            }
            .await
            .map(|()| cached.clone()),
            None => {
                changed = true;
                async {
                    let layout = lake.layout(def, None).await?;
                    let p = provider(lake, def, &layout, Text::Plain).await?;
                    Ok((layout, p))
                }
                .await
            }
        };
        match result {
            Ok(cached) => {
                if changed {
                    entry.changed = self.bump();
                }
                entry.cached = Some(cached.clone());
                entry.checked = Some(began);
                Ok(cached)
            }
            Err(e) => {
                // Half refreshed is not kept: the next query reads afresh.
                *entry = Entry {
                    changed: self.bump(),
                    ..Entry::default()
                };
                Err(e)
            }
        }
    }
}

/// The lake's tables `defs` declares as one schema, each brought up to
/// date through a [`TableCache`] when a statement first names it and then
/// kept for the rest of the session (a statement that reads a table twice
/// reads one version). A declared table the lake does not hold yet reads
/// as empty.
pub(crate) struct LakeSchema {
    lake: Lake,
    defs: Vec<TableDef>,
    cache: Arc<TableCache>,
    /// Registers each table's object store in the sessions' shared runtime.
    stores: SessionState,
    since: Instant,
    seen: tokio::sync::Mutex<HashMap<String, Arc<dyn TableProvider>>>,
}

impl std::fmt::Debug for LakeSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LakeSchema")
            .field("tables", &self.defs.len())
            .finish_non_exhaustive()
    }
}

impl LakeSchema {
    pub(crate) fn new(
        lake: &Lake,
        defs: Vec<TableDef>,
        cache: Arc<TableCache>,
        runtime: Arc<RuntimeEnv>,
    ) -> Self {
        let stores = datafusion::execution::SessionStateBuilder::new()
            .with_runtime_env(runtime)
            .build();
        Self {
            lake: lake.clone(),
            defs,
            cache,
            stores,
            since: Instant::now(),
            seen: Default::default(),
        }
    }

    async fn open(&self, def: &TableDef) -> Result<Arc<dyn TableProvider>, QueryError> {
        if let Some(built) = built_table(def)? {
            return Ok(built);
        }
        let (layout, provider) = self.cache.current(&self.lake, def, self.since).await?;
        if let Layout::Single(table) = &layout {
            table.update_datafusion_session(&self.stores).map_err(|e| {
                crate::lake::LakeError::Delta {
                    table: def.name.clone(),
                    source: Box::new(e),
                }
            })?;
            if !def.lookup.is_empty() {
                self.warm(def, table).await;
            }
        }
        match provider {
            Some(p) => Ok(p),
            None => empty_table(def),
        }
    }
}

impl LakeSchema {
    /// Put the footer of each file of a lookup table, page index included,
    /// in the runtime's metadata cache, once per version. DataFusion's
    /// Parquet opener caches a footer without its page index and reads the
    /// page index again on every scan (into a copy it does not cache); it
    /// loads nothing when the cached footer has it. Best effort: a file
    /// that cannot be read here is read by the scan as before.
    async fn warm(&self, def: &TableDef, table: &deltalake::DeltaTable) {
        let Some(version) = table.version() else {
            return;
        };
        if self.cache.warmed().get(&def.name) == Some(&version) {
            return;
        }
        match warm_files(table, self.stores.runtime_env()).await {
            Ok(files) => {
                metrics::counter!("custlake_page_indexes_cached_total").increment(files);
            }
            Err(e) => {
                tracing::warn!(table = %def.name, "page indexes not cached: {e}");
                return;
            }
        }
        self.cache.warmed().insert(def.name.clone(), version);
    }
}

/// Load every data file's footer with its page index into `runtime`'s
/// metadata cache, under the key and with the size and time the Delta scan
/// gives the file (its URL's path, its size, time zero); returns how many.
async fn warm_files(
    table: &deltalake::DeltaTable,
    runtime: &RuntimeEnv,
) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
    use chrono::TimeZone;
    use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;
    use datafusion::execution::object_store::ObjectStoreUrl;
    use datafusion::parquet::file::metadata::PageIndexPolicy;
    let cache = runtime.cache_manager.get_file_metadata_cache();
    let log_store = table.log_store();
    // As the scan names them: the table's root joined with the path.
    let mut root = log_store.root_url().clone();
    if !root.path().ends_with('/') {
        root.set_path(&format!("{}/", root.path()));
    }
    let files: Vec<(String, u64)> = table
        .snapshot()?
        .log_data()
        .into_iter()
        .map(|f| (f.path().into_owned(), f.size() as u64))
        .collect();
    let count = files.len() as u64;
    for (path, size) in files {
        let url = root.join(&path)?;
        let store_url = ObjectStoreUrl::parse(format!(
            "{}://{}",
            url.scheme(),
            &url[url::Position::BeforeHost..url::Position::AfterPort]
        ))?;
        let store = runtime.object_store(&store_url)?;
        let meta = object_store::ObjectMeta {
            location: object_store::path::Path::from_url_path(url.path())?,
            size,
            last_modified: chrono::Utc.timestamp_nanos(0),
            e_tag: None,
            version: None,
        };
        DFParquetMetadata::new(store.as_ref(), &meta)
            .with_file_metadata_cache(Some(cache.clone()))
            .with_page_index_policy(Some(PageIndexPolicy::Required))
            .fetch_metadata()
            .await?;
    }
    Ok(count)
}

#[async_trait::async_trait]
impl SchemaProvider for LakeSchema {
    fn table_names(&self) -> Vec<String> {
        self.defs.iter().map(|d| d.name.clone()).collect()
    }

    async fn table(&self, name: &str) -> datafusion::error::Result<Option<Arc<dyn TableProvider>>> {
        let Some(def) = self.defs.iter().find(|d| d.name == name) else {
            return Ok(None);
        };
        let mut seen = self.seen.lock().await;
        if let Some(t) = seen.get(name) {
            return Ok(Some(t.clone()));
        }
        let t = self
            .open(def)
            .await
            .map_err(crate::error::Kinded::datafusion)?;
        seen.insert(name.to_string(), t.clone());
        Ok(Some(t))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.defs.iter().any(|d| d.name == name)
    }
}
