//! Staging: one thread splits a file into raw records; worker threads
//! decode, map, normalise and validate them, writing good rows to local
//! Arrow IPC files (or straight into a Delta append) and bad rows to
//! quarantine files, with a count of every reason.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::ipc::writer::FileWriter;
use datafusion::arrow::record_batch::RecordBatch;

use super::IngestError;
use super::reader::{self, RowResult};
use super::transform::{self, Mapper};
use crate::domain::Reason;
use crate::error::Classify;
use crate::schema::row::{BatchBuilder, Cell};
use crate::schema::{Catalog, TableDef};

pub(super) fn paths(files: &[PathBuf]) -> Vec<String> {
    files
        .iter()
        .map(|f| f.to_string_lossy().to_string())
        .collect()
}

/// The keys in `seen` are already hashes: pass them through.
#[derive(Default)]
struct KeyHashHasher(u64);

impl Hasher for KeyHashHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

pub(super) struct StageJob {
    pub(super) catalog: Catalog,
    pub(super) system: String,
    pub(super) entity: String,
    pub(super) path: PathBuf,
    pub(super) batch_id: String,
    pub(super) staging: PathBuf,
    pub(super) batch_rows: usize,
    pub(super) started_at: chrono::DateTime<chrono::Utc>,
    pub(super) counter: Arc<AtomicU64>,
    pub(super) rows: Arc<AtomicU64>,
    pub(super) stream: Option<BatchSender>,
    pub(super) caps: reader::Caps,
}

pub(super) struct Staged {
    pub(super) good_files: Vec<PathBuf>,
    pub(super) bad_files: Vec<PathBuf>,
    pub(super) rows_read: u64,
    pub(super) rows_loaded: u64,
    pub(super) rows_quarantined: u64,
    pub(super) duplicates: bool,
    pub(super) reasons: BTreeMap<String, u64>,
    /// The first row (by line) that was not the declared encoding.
    first_bad_encoding: Option<(u64, String)>,
}

impl Staged {
    fn add(&mut self, other: Staged) {
        self.good_files.extend(other.good_files);
        self.bad_files.extend(other.bad_files);
        self.rows_read += other.rows_read;
        self.rows_loaded += other.rows_loaded;
        self.rows_quarantined += other.rows_quarantined;
        self.duplicates |= other.duplicates;
        for (k, v) in other.reasons {
            *self.reasons.entry(k).or_insert(0) += v;
        }
        if let Some(b) = other.first_bad_encoding
            && self.first_bad_encoding.as_ref().is_none_or(|a| b.0 < a.0)
        {
            self.first_bad_encoding = Some(b);
        }
    }

    /// A file none of whose rows decodes is in another encoding than its
    /// mapping declares: refused as a whole, not quarantined row by row.
    fn check_encoding(self, path: &Path, encoding: &str) -> Result<Self, IngestError> {
        let bad = self.reasons.get(Reason::BadEncoding.as_str()).copied();
        match (&self.first_bad_encoding, bad) {
            (Some((line, detail)), Some(n)) if n == self.rows_read && self.rows_loaded == 0 => {
                Err(IngestError::Unreadable {
                    file: Box::new(path.to_path_buf()),
                    line: Some(*line),
                    column: None,
                    message: format!("no row is valid {encoding}: {detail}").into_boxed_str(),
                })
            }
            _ => Ok(self),
        }
    }

    fn empty() -> Self {
        Self {
            good_files: Vec::new(),
            bad_files: Vec::new(),
            rows_read: 0,
            rows_loaded: 0,
            rows_quarantined: 0,
            duplicates: false,
            first_bad_encoding: None,
            reasons: BTreeMap::new(),
        }
    }
}

/// Where validated rows go while a file is read: a local Arrow IPC file
/// (committed by an upsert afterwards), or a channel straight into a Delta
/// append running alongside.
enum Sink {
    File(Box<FileWriter<std::io::BufWriter<File>>>),
    Channel(BatchSender),
}

pub(super) type BatchSender = tokio::sync::mpsc::Sender<datafusion::error::Result<RecordBatch>>;

struct Stager {
    builder: BatchBuilder,
    sink: Sink,
    batch_rows: usize,
    /// Text bytes in the batch being built: a batch is flushed before its
    /// text could pass Arrow's 32-bit offsets (2 GiB in one column).
    text_bytes: usize,
    /// Text bytes that close a batch ([`BATCH_TEXT_BYTES`]).
    max_text: usize,
}

/// Text bytes a batch may hold before it is flushed, whatever its rows.
const BATCH_TEXT_BYTES: usize = 256 << 20;

impl Stager {
    fn new(
        path: &Path,
        table: &TableDef,
        with_line: bool,
        batch_rows: usize,
    ) -> Result<Self, IngestError> {
        let builder = BatchBuilder::new(table, with_line);
        let file = File::create(path).map_err(|e| IngestError::io(path, e))?;
        let writer = FileWriter::try_new(
            std::io::BufWriter::with_capacity(1 << 20, file),
            &builder.schema(),
        )?;
        Ok(Self {
            builder,
            sink: Sink::File(Box::new(writer)),
            batch_rows,
            text_bytes: 0,
            max_text: BATCH_TEXT_BYTES,
        })
    }

    fn channel(table: &TableDef, tx: BatchSender, batch_rows: usize) -> Self {
        Self {
            builder: BatchBuilder::new(table, false),
            sink: Sink::Channel(tx),
            batch_rows,
            text_bytes: 0,
            max_text: BATCH_TEXT_BYTES,
        }
    }

    /// Does this sink keep each row's line (to order duplicate keys)?
    fn keeps_lines(&self) -> bool {
        matches!(self.sink, Sink::File(_))
    }

    fn push(&mut self, cells: &[Cell], line: Option<i64>) -> Result<(), IngestError> {
        self.builder.push(cells, line);
        self.text_bytes += cells
            .iter()
            .map(|c| match c {
                Cell::Str(s) => s.len(),
                _ => 0,
            })
            .sum::<usize>();
        if self.builder.len() >= self.batch_rows || self.text_bytes >= self.max_text {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), IngestError> {
        self.text_bytes = 0;
        if !self.builder.is_empty() {
            let batch: RecordBatch = self.builder.finish()?;
            match &mut self.sink {
                Sink::File(w) => w.write(&batch)?,
                Sink::Channel(tx) => tx
                    .blocking_send(Ok(batch))
                    .map_err(|_| IngestError::Internal("the table writer stopped"))?,
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<(), IngestError> {
        self.flush()?;
        match &mut self.sink {
            Sink::File(w) => w.finish().map_err(IngestError::from),
            Sink::Channel(_) => Ok(()),
        }
    }
}

/// Raw records are handed to the workers in chunks of this many, or of
/// this many bytes if less (what waits in the queue is bounded by bytes,
/// whatever the records' size).
const CHUNK: usize = 1024;
const CHUNK_BYTES: usize = 4 << 20;

type KeySet = HashSet<u64, std::hash::BuildHasherDefault<KeyHashHasher>>;

impl StageJob {
    /// Read the whole file. Valid rows go to the stream when one is given
    /// (which is then ended with an error if anything goes wrong, so the
    /// writer commits nothing), otherwise to local staging files.
    pub(super) fn run(mut self) -> Result<Staged, IngestError> {
        let stream = self.stream.take();
        let abort = stream.clone();
        match self.fill(stream) {
            Ok(staged) => Ok(staged),
            Err(e) => {
                if let Some(tx) = abort {
                    let _ = tx.blocking_send(Err(crate::error::Kinded::datafusion_of(
                        e.kind(),
                        e.to_string(),
                    )));
                }
                Err(e)
            }
        }
    }

    /// One thread splits the file into raw records; the workers decode,
    /// map, validate and write them.
    fn fill(&self, stream: Option<BatchSender>) -> Result<Staged, IngestError> {
        let mapping = self.catalog.entity(&self.system, &self.entity)?.clone();
        let probe = Mapper::new(
            &self.catalog,
            &self.system,
            &mapping,
            &self.batch_id,
            self.started_at,
        )?;
        let mandatory = if mapping.format == crate::schema::FileFormat::Jsonl {
            &probe.key_columns
        } else {
            &probe.mandatory
        };
        let mut rdr = reader::open(
            &self.path,
            &mapping,
            &probe.needed,
            mandatory,
            self.batch_rows,
            self.caps,
            self.counter.clone(),
        )?;
        let layout = rdr.layout();
        let workers = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(1, 8);
        let seen = std::sync::Mutex::new(KeySet::default());
        let stop = std::sync::atomic::AtomicBool::new(false);
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<reader::Raw>>(workers * 4);
        let rx = std::sync::Mutex::new(rx);
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|w| {
                    let (layout, mapping, rx, seen, stop) = (&layout, &mapping, &rx, &seen, &stop);
                    let stream = stream.clone();
                    scope.spawn(move || {
                        let result = self.work(w, layout, mapping, rx, seen, stream);
                        if result.is_err() {
                            stop.store(true, Ordering::Relaxed);
                        }
                        result
                    })
                })
                .collect();
            drop(stream);
            // Split the file, handing chunks to the workers.
            let mut read_result = Ok(0u64);
            let mut chunk = Vec::with_capacity(CHUNK);
            let mut chunk_bytes = 0usize;
            let mut rows = 0u64;
            loop {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match rdr.next_raw() {
                    Ok(Some(raw)) => {
                        rows += 1;
                        chunk_bytes += raw.size();
                        chunk.push(raw);
                        if chunk.len() == CHUNK || chunk_bytes >= CHUNK_BYTES {
                            chunk_bytes = 0;
                            self.rows.store(rows, Ordering::Relaxed);
                            if tx
                                .send(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)))
                                .is_err()
                            {
                                break;
                            }
                        }
                    }
                    Ok(None) => {
                        if !chunk.is_empty() {
                            let _ = tx.send(std::mem::take(&mut chunk));
                        }
                        read_result = Ok(rows);
                        break;
                    }
                    Err(e) => {
                        read_result = Err(e);
                        break;
                    }
                }
            }
            drop(tx);
            let mut total = Staged::empty();
            let mut first_error: Option<IngestError> = read_result.err();
            for h in handles {
                match h.join() {
                    Ok(Ok(part)) => total.add(part),
                    Ok(Err(e)) => {
                        // A fatal problem in the file outranks the fallout of
                        // stopping early; keep the first one found.
                        let replace = match &first_error {
                            None => true,
                            Some(IngestError::Unreadable { .. }) => false,
                            Some(_) => matches!(e, IngestError::Unreadable { .. }),
                        };
                        if replace {
                            first_error = Some(e);
                        }
                    }
                    Err(_) => {
                        first_error
                            .get_or_insert(IngestError::Internal("an ingest worker panicked"));
                    }
                }
            }
            match first_error {
                Some(e) => Err(e),
                None => total.check_encoding(
                    &self.path,
                    match mapping.encoding {
                        crate::schema::TextEncoding::Utf8 => "UTF-8",
                        crate::schema::TextEncoding::Gbk => "GBK",
                    },
                ),
            }
        })
    }

    /// The quarantine record of a row that failed, with every issue found
    /// and the row as read.
    fn quarantined(
        &self,
        stamp: &Stamp,
        table: &str,
        line: u64,
        issues: &[transform::Issue],
        raw: String,
    ) -> Vec<Cell> {
        let first = &issues[0];
        let reasons: Vec<String> = issues
            .iter()
            .map(|i| format!("{}:{}", i.code, i.field))
            .collect();
        vec![
            Cell::Str(self.batch_id.clone()),
            Cell::I64(line as i64),
            Cell::Str(self.system.clone()),
            Cell::Str(self.entity.clone()),
            Cell::Str(table.to_string()),
            Cell::Str(stamp.file.clone()),
            Cell::Str(first.code.to_string()),
            if first.field.is_empty() {
                Cell::Null
            } else {
                Cell::Str(first.field.clone())
            },
            first.value.clone().map_or(Cell::Null, Cell::Str),
            Cell::Str(reasons.join("; ")),
            Cell::Str(first.detail.clone()),
            Cell::Str(raw),
            Cell::Ts(stamp.now),
            Cell::Str(stamp.month.clone()),
        ]
    }

    /// One worker: decode, map, validate; stage or stream the good rows,
    /// stage the quarantined ones.
    fn work(
        &self,
        w: usize,
        layout: &reader::Layout,
        mapping: &crate::schema::EntityMapping,
        rx: &std::sync::Mutex<std::sync::mpsc::Receiver<Vec<reader::Raw>>>,
        seen: &std::sync::Mutex<KeySet>,
        stream: Option<BatchSender>,
    ) -> Result<Staged, IngestError> {
        let mut mapper = Mapper::new(
            &self.catalog,
            &self.system,
            mapping,
            &self.batch_id,
            self.started_at,
        )?;
        let qdef = self.catalog.table("quarantine")?.clone();
        let good_file = self.staging.join(format!("rows-{w}.arrow"));
        let bad_file = self.staging.join(format!("quarantine-{w}.arrow"));
        let mut good = match stream {
            Some(tx) => Stager::channel(&mapper.table, tx, self.batch_rows),
            None => Stager::new(&good_file, &mapper.table, true, self.batch_rows)?,
        };
        let mut bad = Stager::new(&bad_file, &qdef, false, self.batch_rows)?;
        let key_idx: Vec<usize> = mapper
            .table
            .key
            .iter()
            .filter_map(|k| mapper.table.index_of(k))
            .collect();
        let mut values: Vec<Option<String>> = vec![None; mapper.needed.len()];
        let mut scratch: Vec<String> = Vec::new();
        let mut hashes: Vec<u64> = Vec::with_capacity(CHUNK);
        let mut out = Staged::empty();
        if good.keeps_lines() {
            out.good_files.push(good_file);
        }
        out.bad_files.push(bad_file);
        let stamp = Stamp {
            file: self.path.display().to_string(),
            now: self.started_at.timestamp_micros(),
            month: self
                .started_at
                .with_timezone(&crate::domain::beijing())
                .format("%Y-%m")
                .to_string(),
        };
        loop {
            let chunk = match rx.lock() {
                Ok(rx) => rx.recv(),
                Err(_) => return Err(IngestError::Internal("ingest work queue poisoned")),
            };
            let Ok(chunk) = chunk else { break };
            hashes.clear();
            for raw in &chunk {
                out.rows_read += 1;
                let issues = match layout.decode(raw, &mut values, &mut scratch)? {
                    RowResult::Malformed {
                        line,
                        reason,
                        detail,
                    } => {
                        if reason == Reason::BadEncoding
                            && out.first_bad_encoding.as_ref().is_none_or(|b| line < b.0)
                        {
                            out.first_bad_encoding = Some((line, detail.clone()));
                        }
                        Some((
                            line,
                            vec![transform::Issue {
                                code: reason,
                                field: String::new(),
                                value: None,
                                detail,
                            }],
                        ))
                    }
                    RowResult::Row(line) => match mapper.apply(&values) {
                        Ok(()) => {
                            let cells = mapper.cells();
                            // FNV-1a: a collision only makes a file take the (exact)
                            // staged path for repeated keys.
                            let mut h = crate::domain::Fnv64::default();
                            for &i in &key_idx {
                                cells[i].hash(&mut h);
                            }
                            hashes.push(h.finish());
                            good.push(cells, good.keeps_lines().then_some(line as i64))?;
                            out.rows_loaded += 1;
                            None
                        }
                        Err(issues) => Some((line, issues)),
                    },
                };
                if let Some((line, issues)) = issues {
                    *out.reasons.entry(issues[0].code.to_string()).or_insert(0) += 1;
                    out.rows_quarantined += 1;
                    let json = layout.raw_json(raw, &scratch);
                    let cells = self.quarantined(&stamp, &mapping.table, line, &issues, json);
                    bad.push(&cells, None)?;
                }
            }
            // Keys seen twice (in this file) need the last-line-wins rule.
            let mut set = seen
                .lock()
                .map_err(|_| IngestError::Internal("key set poisoned"))?;
            for h in &hashes {
                if !set.insert(*h) {
                    out.duplicates = true;
                }
            }
            drop(set);
            if out.duplicates && !good.keeps_lines() {
                // A streamed append cannot keep only the last of two rows:
                // the caller starts over with staging.
                return Err(IngestError::DuplicateKeys);
            }
        }
        good.finish()?;
        bad.finish()?;
        Ok(out)
    }
}

/// What every quarantine record of one file carries: the file, when it was
/// read, and the month it is filed under.
struct Stamp {
    file: String,
    now: i64,
    month: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A quarantine row whose raw text is `raw`.
    fn rejected(line: i64, raw: String) -> Vec<Cell> {
        let s = |v: &str| Cell::Str(v.to_string());
        vec![
            s("b1"),
            Cell::I64(line),
            s("telesales"),
            s("customer"),
            s("source_customer"),
            s("leads.csv"),
            s("MALFORMED_ROW"),
            Cell::Null,
            Cell::Null,
            s("MALFORMED_ROW:"),
            s("test"),
            Cell::Str(raw),
            Cell::Ts(0),
            s("2026-12"),
        ]
    }

    #[test]
    fn batches_close_by_text_bytes_before_a_column_outgrows_its_offsets() {
        let catalog = Catalog::embedded().unwrap();
        let def = catalog.table("quarantine").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.arrow");
        let mut stager = Stager::new(&path, def, false, 65_536).unwrap();
        // Scaled down: a 1 MiB limit stands for 256 MiB, as 40 KB rows
        // would pass 2 GiB within one 65,536-row batch.
        stager.max_text = 1 << 20;
        for line in 0..100 {
            stager
                .push(&rejected(line, "x".repeat(40_000)), None)
                .unwrap();
        }
        stager.finish().unwrap();
        let reader =
            datafusion::arrow::ipc::reader::FileReader::try_new(File::open(&path).unwrap(), None)
                .unwrap();
        let sizes: Vec<usize> = reader.map(|b| b.unwrap().num_rows()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 100);
        // 40 KB rows, 1 MiB a batch: 27 rows fill one (26 stay under).
        assert!(
            sizes.len() >= 4 && sizes.iter().all(|n| *n <= 27),
            "{sizes:?}"
        );
    }
}
