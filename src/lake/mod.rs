//! The lake: one object-store root per tier and a Delta table per declared
//! table. Tier moves and retention build on this (see design.md §3); until
//! they do, every table lives in the hot tier.

mod write;

use std::path::Path;

use datafusion::parquet::file::properties::WriterProperties;
use deltalake::kernel::StructField;
use deltalake::{DeltaTable, DeltaTableError};
use url::Url;

use crate::config::{Config, parse_compression};
use crate::schema::TableDef;

pub use write::{BatchReceiver, UpsertOutcome, append_stream, overwrite, upsert};

#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("lake location {location:?}: {message}")]
    Location { location: String, message: String },
    #[error("table {table}: {source}")]
    Delta {
        table: String,
        #[source]
        source: Box<DeltaTableError>,
    },
    #[error("writing table {table}: {message}")]
    Write { table: String, message: String },
    #[error("table {table}: its stored schema does not match schemas/{table}.toml: {message}")]
    SchemaMismatch { table: String, message: String },
}

/// The three storage tiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

/// The lake's roots, resolved from the configuration.
#[derive(Debug, Clone)]
pub struct Lake {
    pub config: Config,
    roots: [Url; 3],
}

impl Lake {
    pub fn new(config: &Config) -> Result<Self, LakeError> {
        let lake_root = to_url(&config.lake, true)?;
        let tier_url = |tier: Tier, configured: &str| -> Result<Url, LakeError> {
            if configured.trim().is_empty() {
                join(&lake_root, tier.name())
            } else {
                to_url(configured, true)
            }
        };
        Ok(Self {
            roots: [
                tier_url(Tier::Hot, &config.tiers.hot.url)?,
                tier_url(Tier::Warm, &config.tiers.warm.url)?,
                tier_url(Tier::Cold, &config.tiers.cold.url)?,
            ],
            config: config.clone(),
        })
    }

    pub fn root(&self, tier: Tier) -> &Url {
        &self.roots[tier as usize]
    }

    /// Where a table lives (in the hot tier).
    pub fn table_url(&self, table: &str) -> Result<Url, LakeError> {
        join(self.root(Tier::Hot), table)
    }

    /// Open a table if it has been created.
    pub async fn open(&self, def: &TableDef) -> Result<Option<DeltaTable>, LakeError> {
        let url = self.table_url(&def.name)?;
        if url.scheme() == "file" {
            let path = url.to_file_path().map_err(|_| LakeError::Location {
                location: url.to_string(),
                message: "not a local path".into(),
            })?;
            if !path.join("_delta_log").exists() {
                return Ok(None);
            }
        }
        let table = DeltaTable::try_from_url(url)
            .await
            .map_err(|source| delta_err(&def.name, source))?;
        Ok(table.version().is_some().then_some(table))
    }

    /// Open a table, creating it empty (with its declared schema and
    /// partitioning) if it does not exist yet.
    pub async fn open_or_create(&self, def: &TableDef) -> Result<DeltaTable, LakeError> {
        if let Some(t) = self.open(def).await? {
            check_schema(def, &t)?;
            return Ok(t);
        }
        let url = self.table_url(&def.name)?;
        if url.scheme() == "file"
            && let Ok(path) = url.to_file_path()
        {
            std::fs::create_dir_all(&path).map_err(|e| LakeError::Location {
                location: path.display().to_string(),
                message: e.to_string(),
            })?;
        }
        let table = deltalake::DeltaTableBuilder::from_url(url)
            .and_then(|b| b.build())
            .map_err(|source| delta_err(&def.name, source))?;
        let columns = delta_columns(def)?;
        let mut create = table
            .create()
            .with_table_name(&def.name)
            .with_comment(&def.description)
            .with_columns(columns)
            .with_save_mode(deltalake::protocol::SaveMode::Ignore);
        if let Some(p) = &def.partition {
            create = create.with_partition_columns([p.column.clone()]);
        }
        create.await.map_err(|source| delta_err(&def.name, source))
    }

    /// Remove whatever an aborted first write left at a table's location,
    /// provided the table was never created (no `_delta_log`): uncommitted
    /// data files are invisible to readers, but nothing should remain.
    pub async fn remove_uncommitted(&self, def: &TableDef) -> Result<(), LakeError> {
        use datafusion::object_store::ObjectStoreExt;
        use futures::TryStreamExt;
        let url = self.table_url(&def.name)?;
        let table = deltalake::DeltaTableBuilder::from_url(url)
            .and_then(|b| b.build())
            .map_err(|source| delta_err(&def.name, source))?;
        let store = table.object_store();
        let files: Vec<deltalake::ObjectMeta> = store
            .list(None)
            .try_collect()
            .await
            .map_err(|e| delta_err(&def.name, e.into()))?;
        if files
            .iter()
            .any(|f| f.location.as_ref().starts_with("_delta_log"))
        {
            return Ok(());
        }
        for f in files {
            store
                .delete(&f.location)
                .await
                .map_err(|e| delta_err(&def.name, e.into()))?;
        }
        Ok(())
    }

    /// Parquet writer settings for a table's files in the hot tier.
    ///
    /// Dictionary encoding is kept for columns with few distinct values and
    /// turned off where nearly every value is new (keys, ids, names, phones),
    /// where it only costs time. Partitioned tables get smaller row groups:
    /// the writer keeps one open file per partition, and a smaller row group
    /// bounds what each holds in memory.
    pub fn writer_properties(&self, def: &TableDef) -> WriterProperties {
        let compression = parse_compression(&self.config.tiers.hot.compression)
            .unwrap_or(datafusion::parquet::basic::Compression::SNAPPY);
        let rows = if def.partition.is_some() {
            16 * 1024
        } else {
            128 * 1024
        };
        let mut b = WriterProperties::builder()
            .set_compression(compression)
            .set_max_row_group_row_count(Some(rows));
        for f in def.fields.iter().filter(|f| def.is_high_cardinality(f)) {
            b = b.set_column_dictionary_enabled(f.name.as_str().into(), false);
        }
        b.build()
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
pub fn to_url(location: &str, dir: bool) -> Result<Url, LakeError> {
    let bad = |message: String| LakeError::Location {
        location: location.to_string(),
        message,
    };
    if location.contains("://") {
        let mut url = Url::parse(location).map_err(|e| bad(e.to_string()))?;
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
        .map_err(|e| LakeError::Location {
            location: format!("{root}{child}"),
            message: e.to_string(),
        })
}
