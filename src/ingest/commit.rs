//! A file's commits, each atomic and in this order: the good rows, the
//! quarantined rows, the `ingest_batch` row that marks the file loaded. A
//! process killed in between leaves complete commits behind; the next run
//! of the same file completes the load (every commit is an upsert by key).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use datafusion::datasource::file_format::options::ArrowReadOptions;

use super::staging::{BatchSender, StageJob, Staged, paths};
use super::{IngestError, Ingestor};
use crate::lake::{append_stream, failpoint, upsert, upsert_leased};
use crate::progress::Task;
use crate::schema::TableDef;
use crate::schema::row::{BatchBuilder, Cell};

/// One file being loaded.
pub(super) struct Load<'a> {
    pub(super) ingestor: &'a Ingestor<'a>,
    pub(super) system: &'a str,
    pub(super) entity: &'a str,
    pub(super) path: &'a Path,
    pub(super) table: &'a TableDef,
    pub(super) batch_id: &'a str,
    pub(super) sha: &'a str,
    pub(super) bytes: u64,
    pub(super) started_at: chrono::DateTime<chrono::Utc>,
    pub(super) task: Arc<dyn Task>,
}

/// Where the staging threads count what they read, for the progress task.
#[derive(Default)]
struct Counters {
    bytes: Arc<AtomicU64>,
    rows: Arc<AtomicU64>,
}

impl Load<'_> {
    fn metadata(&self) -> Vec<(String, serde_json::Value)> {
        vec![
            (
                "custlake.batch_id".to_string(),
                serde_json::Value::String(self.batch_id.to_string()),
            ),
            (
                "custlake.file".to_string(),
                serde_json::Value::String(self.path.display().to_string()),
            ),
        ]
    }

    fn job(&self, staging: &Path, counters: &Counters, stream: Option<BatchSender>) -> StageJob {
        let wh = self.ingestor.warehouse;
        StageJob {
            catalog: wh.catalog.as_ref().clone(),
            system: self.system.to_string(),
            entity: self.entity.to_string(),
            path: self.path.to_path_buf(),
            batch_id: self.batch_id.to_string(),
            staging: staging.to_path_buf(),
            batch_rows: wh.config.ingest.batch_rows,
            started_at: self.started_at,
            counter: counters.bytes.clone(),
            rows: counters.rows.clone(),
            stream,
            caps: super::reader::Caps {
                record_bytes: wh.config.ingest.max_record_kb.saturating_mul(1024),
                field_bytes: wh.config.ingest.max_field_kb.saturating_mul(1024),
            },
        }
    }

    /// Stage and commit the whole file.
    pub(super) async fn run(&self) -> Result<Staged, IngestError> {
        let config = &self.ingestor.warehouse.config;
        let staging_root = staging_root(&config.lake, &config.ingest.staging_dir);
        let own_root = config.ingest.staging_dir.trim().is_empty();
        let staging_err = |source| IngestError::Staging {
            dir: Box::new(staging_root.clone()),
            source,
        };
        prepare_staging(&staging_root, own_root).map_err(staging_err)?;
        // Owner-only (0700), named by this process, removed when done; one
        // left by a process that died is removed by the next load.
        let staging = tempfile::Builder::new()
            .prefix(&format!("{STAGE_PREFIX}{}@{}-", std::process::id(), host()))
            .tempdir_in(&staging_root)
            .map_err(staging_err)?;
        let counters = Counters::default();
        let ticker = {
            let (bytes, rows, task) = (
                counters.bytes.clone(),
                counters.rows.clone(),
                self.task.clone(),
            );
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    task.set_position(bytes.load(Ordering::Relaxed));
                    task.set_message(&format!("{} rows", rows.load(Ordering::Relaxed)));
                }
            })
        };
        // The ticker shows the reading; it stops when the rows are in.
        let rows = self.commit_rows(staging.path(), &counters).await;
        ticker.abort();
        let result = match rows {
            Ok((staged, version)) => self.commit_rest(staged, version).await,
            Err(e) => Err(e),
        };
        drop(staging);
        result
    }

    /// After the rows: the quarantine, then the batch record.
    async fn commit_rest(
        &self,
        staged: Staged,
        table_version: Option<i64>,
    ) -> Result<Staged, IngestError> {
        self.task.set_position(self.bytes);
        failpoint("ingest.after_data_commit");
        self.commit_quarantine(&staged).await?;
        failpoint("ingest.after_quarantine_commit");
        self.commit_batch(&staged, table_version).await?;
        Ok(staged)
    }

    /// Commit 1, the good rows. Into a table with no rows yet they stream
    /// straight into a Delta append while the file is read; otherwise (or
    /// when the file repeats a key) they are staged, then upserted.
    async fn commit_rows(
        &self,
        staging: &Path,
        counters: &Counters,
    ) -> Result<(Staged, Option<i64>), IngestError> {
        let (lake, ctx, table) = (
            &self.ingestor.warehouse.lake,
            &self.ingestor.ctx,
            self.table,
        );
        if let Some(table_existed) = crate::lake::streamable(lake, table).await? {
            // A second early, for stores that keep whole seconds.
            let write_started = chrono::Utc::now() - chrono::Duration::seconds(1);
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let stage = self.job(staging, counters, Some(tx));
            let staging_task = tokio::task::spawn_blocking(move || stage.run());
            let write = append_stream(lake, ctx, table, rx, self.metadata());
            let (written, staged) = tokio::join!(write, staging_task);
            let staged = staged.map_err(IngestError::from).and_then(|s| s);
            match (staged, written) {
                (Ok(staged), Ok(out)) => return Ok((staged, Some(out.version))),
                (staged, written) => {
                    if table_existed {
                        // The aborted append may have written files into
                        // the table's directory: no commit names them.
                        lake.remove_unreferenced(table, write_started).await?;
                    } else {
                        lake.remove_uncommitted(table).await?;
                    }
                    match (staged, written) {
                        // A key seen twice: start over, staged.
                        (Err(IngestError::DuplicateKeys), _) => {
                            counters.bytes.store(0, Ordering::Relaxed);
                        }
                        (Err(e), _) => return Err(e),
                        (Ok(_), Err(e)) => return Err(e.into()),
                        (Ok(_), Ok(_)) => unreachable!("handled above"),
                    }
                }
            }
        }
        let stage = self.job(staging, counters, None);
        let staged = tokio::task::spawn_blocking(move || stage.run()).await??;
        self.task
            .set_message(&format!("{} rows read, committing", staged.rows_read));
        let mut version = None;
        if staged.rows_loaded > 0 {
            let df = ctx
                .read_arrow(paths(&staged.good_files), ArrowReadOptions::default())
                .await
                .map_err(|e| e.context("reading the staged rows"))?;
            let out =
                upsert_leased(lake, ctx, table, df, staged.duplicates, self.metadata()).await?;
            version = Some(out.version);
        }
        Ok((staged, version))
    }

    /// Commit 2, the quarantined rows.
    async fn commit_quarantine(&self, staged: &Staged) -> Result<(), IngestError> {
        if staged.rows_quarantined == 0 {
            return Ok(());
        }
        let wh = self.ingestor.warehouse;
        let qdef = wh.catalog.table("quarantine")?;
        let df = self
            .ingestor
            .ctx
            .read_arrow(paths(&staged.bad_files), ArrowReadOptions::default())
            .await
            .map_err(|e| e.context("reading the staged quarantined rows"))?;
        upsert(
            &wh.lake,
            &self.ingestor.ctx,
            qdef,
            df,
            false,
            self.metadata(),
        )
        .await?;
        Ok(())
    }

    /// Commit 3, the batch record, which marks the file as loaded.
    async fn commit_batch(
        &self,
        staged: &Staged,
        table_version: Option<i64>,
    ) -> Result<(), IngestError> {
        let wh = self.ingestor.warehouse;
        let finished_at = chrono::Utc::now();
        let bdef = wh.catalog.table("ingest_batch")?;
        let cells = vec![
            Cell::Str(self.batch_id.to_string()),
            Cell::Str(self.system.to_string()),
            Cell::Str(self.entity.to_string()),
            Cell::Str(self.table.name.clone()),
            Cell::Str(self.path.display().to_string()),
            Cell::Str(self.sha.to_string()),
            Cell::I64(self.bytes as i64),
            Cell::I64(staged.rows_read as i64),
            Cell::I64(staged.rows_loaded as i64),
            Cell::I64(staged.rows_quarantined as i64),
            Cell::Str("loaded".into()),
            table_version.map_or(Cell::Null, Cell::I64),
            Cell::Ts(self.started_at.timestamp_micros()),
            Cell::Ts(finished_at.timestamp_micros()),
        ];
        let mut b = BatchBuilder::new(bdef, false);
        b.push(&cells, None);
        let df = self.ingestor.ctx.read_batch(b.finish()?)?;
        upsert(
            &wh.lake,
            &self.ingestor.ctx,
            bdef,
            df,
            false,
            self.metadata(),
        )
        .await?;
        Ok(())
    }
}

/// Staging directories start with this, then the process id.
const STAGE_PREFIX: &str = "custlake-stage-";

/// Where files are staged: `ingest.staging_dir`, else `<lake>/_staging`
/// for a lake on local disk (the personal data it holds stays where the
/// lake's does), else `custlake-staging` in the system temp dir.
pub(crate) fn staging_root(lake: &str, configured: &str) -> PathBuf {
    match configured.trim() {
        "" => match crate::lake::to_url(lake, true) {
            Ok(url) if url.scheme() == "file" => url
                .to_file_path()
                .map(|p| p.join("_staging"))
                .unwrap_or_else(|_| std::env::temp_dir().join("custlake-staging")),
            _ => std::env::temp_dir().join("custlake-staging"),
        },
        d => PathBuf::from(d),
    }
}

/// This machine's name (staging directories are named by host and
/// process, so that loads on other hosts sharing the lake are left alone).
fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
        .replace(['/', '@'], "_")
}

/// Create the staging root, owner-only when it is custlake's own (a
/// configured directory keeps its mode: each load's directory is 0700
/// anyway), and remove what loads that died on this host left there.
fn prepare_staging(root: &std::path::Path, own: bool) -> std::io::Result<()> {
    std::fs::create_dir_all(root)?;
    #[cfg(unix)]
    if own {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))?;
    }
    let here = host();
    for entry in std::fs::read_dir(root)?.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        // custlake-stage-<pid>@<host>-<random>
        let Some((pid, rest)) = name
            .strip_prefix(STAGE_PREFIX)
            .and_then(|rest| rest.split_once('@'))
        else {
            continue;
        };
        let (Ok(pid), Some((their_host, _))) = (pid.parse::<u32>(), rest.rsplit_once('-')) else {
            continue;
        };
        if their_host != here || !std::path::Path::new("/proc/self").exists() {
            continue;
        }
        let alive =
            pid == std::process::id() || std::path::Path::new(&format!("/proc/{pid}")).exists();
        if !alive {
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => {
                    tracing::info!(dir = %entry.path().display(), "removed a staging directory a stopped load left")
                }
                Err(e) => {
                    tracing::warn!(dir = %entry.path().display(), error = %e, "could not remove a stale staging directory")
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_is_under_a_local_lake_owner_only_and_stale_stages_go() {
        let t = tempfile::tempdir().unwrap();
        let lake = t.path().join("lake");
        let root = staging_root(lake.to_str().unwrap(), "");
        assert_eq!(root, lake.join("_staging"));
        assert_eq!(
            staging_root("s3://bucket/lake", ""),
            std::env::temp_dir().join("custlake-staging")
        );
        assert_eq!(
            staging_root("s3://b/l", "/var/stage"),
            PathBuf::from("/var/stage")
        );
        let here = host();
        let dead = root.join(format!("custlake-stage-4000000000@{here}-abc"));
        std::fs::create_dir_all(&dead).unwrap();
        let mine = root.join(format!("custlake-stage-{}@{here}-x", std::process::id()));
        std::fs::create_dir_all(&mine).unwrap();
        // Another host's load sharing the lake: not ours to judge.
        let elsewhere = root.join("custlake-stage-4000000000@other-host-abc");
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::fs::create_dir_all(root.join("unrelated")).unwrap();
        prepare_staging(&root, true).unwrap();
        assert!(!dead.exists());
        assert!(mine.exists() && elsewhere.exists() && root.join("unrelated").exists());
        // A configured directory keeps its mode.
        let shared = t.path().join("shared");
        std::fs::create_dir_all(&shared).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
            prepare_staging(&shared, false).unwrap();
            let mode = std::fs::metadata(&shared).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o755);
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&root).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
    }
}
