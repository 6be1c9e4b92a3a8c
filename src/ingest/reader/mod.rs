//! Streaming readers for the source formats.
//!
//! A reader only splits the file into raw records (a CSV record's bytes, a
//! JSON line, a Parquet row); a [`Layout`], shared by the worker threads,
//! turns each raw record into the values the mapping needs and, for a
//! rejected row, the whole raw row as JSON. Splitting is cheap and serial;
//! decoding and validation run in parallel.
//!
//! Whole-file problems (a header in the wrong encoding, missing columns,
//! not the declared format) are fatal and name the file, line and column.
//! A bad record is quarantined and the rest loads: bytes that are not the
//! declared encoding (`BAD_ENCODING`), a record or field over the size caps
//! or a last line cut short (`MALFORMED_ROW`). Records are split with
//! bounded memory (see [`super::split`]).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use datafusion::arrow::array::{Array, StringArray};

use crate::domain::Reason;
use crate::schema::{EntityMapping, FileFormat, TextEncoding};

use super::IngestError;
use super::split::{Piece, Splitter};

mod csv_source;
mod jsonl_source;
mod parquet_source;

use csv_source::CsvSource;
use jsonl_source::JsonlSource;
use parquet_source::ParquetSource;

/// How much of a rejected record's bytes is kept in the quarantine.
const RAW_PREFIX: usize = 4096;

/// The size caps of records and fields.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caps {
    pub(crate) record_bytes: usize,
    pub(crate) field_bytes: usize,
}

/// The splitter's next piece, a read error naming the file.
fn next_piece(
    split: &mut Splitter<std::io::BufReader<std::fs::File>>,
    path: &Path,
) -> Result<Option<Piece>, IngestError> {
    split.next().map_err(|e| IngestError::io(path, e))
}

/// The record for a piece the splitter cut at the record cap: its first
/// line (a prefix of it) set aside as malformed.
fn oversized(piece_line: u64, bytes: u64, open_quote: bool, caps: Caps, raw: &[u8]) -> Raw {
    let cap = caps.record_bytes >> 10;
    let detail = if open_quote {
        format!(
            "a quote opened on this line is not closed within {cap} KiB (ingest.max_record_kb): the line is set aside and reading resumes at the next one"
        )
    } else {
        format!("the line is {bytes} bytes, over {cap} KiB (ingest.max_record_kb)")
    };
    Raw::Rejected {
        line: piece_line,
        reason: Reason::MalformedRow,
        detail,
        raw: prefix(raw),
    }
}

/// A printable prefix of raw bytes.
fn prefix(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(RAW_PREFIX)];
    String::from_utf8_lossy(cut).into_owned()
}

/// What a raw record decoded to.
pub(crate) enum RowResult {
    /// The needed values were filled in.
    Row(u64),
    /// The row could not be split into fields or decoded; quarantined as a
    /// whole.
    Malformed {
        line: u64,
        reason: Reason,
        detail: String,
    },
}

/// One record as the reader split it off the file.
pub(crate) enum Raw {
    Csv {
        line: u64,
        record: csv::ByteRecord,
        /// The file's last record, with no line end after it.
        last: bool,
    },
    Json {
        line: u64,
        text: String,
        last: bool,
    },
    Parquet {
        line: u64,
        columns: Arc<Vec<StringArray>>,
        row: usize,
    },
    /// A record the reader itself set aside (over the size caps, not the
    /// declared encoding), with a printable prefix of its bytes.
    Rejected {
        line: u64,
        reason: Reason,
        detail: String,
        raw: String,
    },
}

impl Raw {
    /// Roughly the bytes it holds (to bound what is buffered).
    pub(crate) fn size(&self) -> usize {
        match self {
            Self::Csv { record, .. } => record.as_slice().len() + 8 * record.len(),
            Self::Json { text, .. } => text.len(),
            Self::Parquet { .. } => 64,
            Self::Rejected { raw, detail, .. } => raw.len() + detail.len(),
        }
    }
}

pub(crate) trait SourceReader: Send {
    /// The next raw record; `None` at the end of the file.
    fn next_raw(&mut self) -> Result<Option<Raw>, IngestError>;
    /// How to decode this file's records.
    fn layout(&self) -> Arc<Layout>;
}

/// How to decode a file's raw records (shared by the worker threads).
pub(crate) struct Layout {
    path: PathBuf,
    encoding: TextEncoding,
    /// CSV header or Parquet column names.
    header: Vec<String>,
    /// For each needed source column, its position in `header`.
    index: Vec<Option<usize>>,
    /// The needed source columns (JSON keys).
    needed: Vec<String>,
}

impl Layout {
    /// Fill `out` with the needed values of `raw`. `scratch` keeps the decoded
    /// fields of a CSV record for [`Layout::raw_json`].
    pub(crate) fn decode(
        &self,
        raw: &Raw,
        out: &mut [Option<String>],
        scratch: &mut Vec<String>,
    ) -> Result<RowResult, IngestError> {
        match raw {
            Raw::Csv { line, record, last } => {
                let line = *line;
                scratch.resize_with(record.len(), String::new);
                let mut bad = None;
                for (i, f) in record.iter().enumerate() {
                    let name = self.header.get(i).map_or("?", String::as_str);
                    if let Err(e) = decode_into(
                        &self.path,
                        self.encoding,
                        f,
                        line,
                        i + 1,
                        name,
                        &mut scratch[i],
                    ) {
                        // Kept as read (undecodable bytes replaced) for
                        // the quarantine.
                        scratch[i] = lossy(self.encoding, f);
                        bad.get_or_insert(e);
                    }
                }
                if let Some(e) = bad {
                    return Ok(RowResult::Malformed {
                        line,
                        reason: Reason::BadEncoding,
                        detail: e.to_string(),
                    });
                }
                if record.len() != self.header.len() {
                    let detail = if *last {
                        format!(
                            "the last line is cut short: {} of {} fields and no line end",
                            record.len(),
                            self.header.len()
                        )
                    } else {
                        format!(
                            "{} fields where the header has {}",
                            record.len(),
                            self.header.len()
                        )
                    };
                    return Ok(RowResult::Malformed {
                        line,
                        reason: Reason::MalformedRow,
                        detail,
                    });
                }
                for (slot, idx) in out.iter_mut().zip(&self.index) {
                    match idx.map(|i| scratch[i].as_str()) {
                        Some(v) if !v.trim().is_empty() => set_slot(slot, v),
                        _ => *slot = None,
                    }
                }
                Ok(RowResult::Row(line))
            }
            Raw::Json { line, text, last } => {
                let line = *line;
                let obj: serde_json::Map<String, serde_json::Value> = match serde_json::from_str(
                    text,
                ) {
                    Ok(o) => o,
                    Err(e) if *last => {
                        return Ok(RowResult::Malformed {
                            line,
                            reason: Reason::MalformedRow,
                            detail: format!(
                                "the last line is cut short: not a complete JSON object and no line end ({e})"
                            ),
                        });
                    }
                    Err(e) => {
                        return Ok(RowResult::Malformed {
                            line,
                            reason: Reason::MalformedRow,
                            detail: format!("not a JSON object: {e}"),
                        });
                    }
                };
                for (slot, key) in out.iter_mut().zip(&self.needed) {
                    match obj.get(key) {
                        None | Some(serde_json::Value::Null) => *slot = None,
                        Some(serde_json::Value::String(s)) if s.trim().is_empty() => *slot = None,
                        Some(serde_json::Value::String(s)) => set_slot(slot, s),
                        Some(other) => set_slot(slot, &other.to_string()),
                    }
                }
                Ok(RowResult::Row(line))
            }
            Raw::Parquet { line, columns, row } => {
                let r = *row;
                for (slot, idx) in out.iter_mut().zip(&self.index) {
                    match idx.map(|i| &columns[i]) {
                        Some(c) if !c.is_null(r) && !c.value(r).trim().is_empty() => {
                            set_slot(slot, c.value(r))
                        }
                        _ => *slot = None,
                    }
                }
                Ok(RowResult::Row(*line))
            }
            Raw::Rejected {
                line,
                reason,
                detail,
                ..
            } => Ok(RowResult::Malformed {
                line: *line,
                reason: *reason,
                detail: detail.clone(),
            }),
        }
    }

    /// The whole raw row as a JSON object of every source column.
    pub(crate) fn raw_json(&self, raw: &Raw, scratch: &[String]) -> String {
        match raw {
            Raw::Csv { .. } => {
                let mut m = serde_json::Map::new();
                for (i, v) in scratch.iter().enumerate() {
                    let k = self
                        .header
                        .get(i)
                        .cloned()
                        .unwrap_or_else(|| format!("_extra_{}", i + 1));
                    m.insert(k, serde_json::Value::String(v.clone()));
                }
                serde_json::Value::Object(m).to_string()
            }
            Raw::Json { text, .. } => text.clone(),
            Raw::Rejected { raw, .. } => serde_json::json!({ "_raw": raw }).to_string(),
            Raw::Parquet { columns, row, .. } => {
                let mut m = serde_json::Map::new();
                for (name, c) in self.header.iter().zip(columns.iter()) {
                    let v = if c.is_null(*row) {
                        serde_json::Value::Null
                    } else {
                        serde_json::Value::String(c.value(*row).to_string())
                    };
                    m.insert(name.clone(), v);
                }
                serde_json::Value::Object(m).to_string()
            }
        }
    }
}

pub(crate) fn open(
    path: &Path,
    mapping: &EntityMapping,
    needed: &[String],
    mandatory: &[String],
    batch_rows: usize,
    caps: Caps,
    counter: Arc<AtomicU64>,
) -> Result<Box<dyn SourceReader>, IngestError> {
    let file = File::open(path).map_err(|e| IngestError::io(path, e))?;
    Ok(match mapping.format {
        FileFormat::Csv => Box::new(CsvSource::new(
            path, file, mapping, needed, mandatory, caps, counter,
        )?),
        FileFormat::Jsonl => Box::new(JsonlSource::new(
            path, file, needed, mandatory, caps, counter,
        )),
        FileFormat::Parquet => Box::new(ParquetSource::new(
            path, file, needed, mandatory, batch_rows, counter,
        )?),
    })
}

fn fatal(
    path: &Path,
    line: Option<u64>,
    column: Option<String>,
    message: impl Into<String>,
) -> IngestError {
    IngestError::Unreadable {
        file: Box::new(path.to_path_buf()),
        line,
        column: column.map(String::into_boxed_str),
        message: message.into().into_boxed_str(),
    }
}

fn missing_columns(
    path: &Path,
    header: &[String],
    mandatory: &[String],
) -> Result<(), IngestError> {
    let missing: Vec<&str> = mandatory
        .iter()
        .filter(|m| !header.iter().any(|h| h == *m))
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let shown: Vec<&str> = header.iter().take(12).map(String::as_str).collect();
    Err(fatal(
        path,
        Some(1),
        None,
        format!(
            "missing mandatory column(s) {} (found: {}); is this the right file, format and encoding?",
            missing.join(", "),
            shown.join(", ")
        ),
    ))
}

fn decode(
    path: &Path,
    encoding: TextEncoding,
    bytes: &[u8],
    line: u64,
    col: usize,
    name: &str,
) -> Result<String, IngestError> {
    let mut s = String::new();
    decode_into(path, encoding, bytes, line, col, name, &mut s)?;
    Ok(s)
}

/// Decode one field into `out` (reusing its allocation).
fn decode_into(
    path: &Path,
    encoding: TextEncoding,
    bytes: &[u8],
    line: u64,
    col: usize,
    name: &str,
    out: &mut String,
) -> Result<(), IngestError> {
    out.clear();
    if bytes.is_ascii() {
        // ASCII is the same in UTF-8 and GBK.
        out.push_str(std::str::from_utf8(bytes).unwrap_or_default());
        return Ok(());
    }
    match encoding {
        TextEncoding::Utf8 => std::str::from_utf8(bytes).map(|s| out.push_str(s)).map_err(|e| {
            fatal(
                path,
                Some(line),
                Some(format!("{col} ({name})")),
                format!(
                    "invalid UTF-8 at byte {} of the field; the mapping declares utf8 (is the file GBK-encoded?)",
                    e.valid_up_to() + 1
                ),
            )
        }),
        TextEncoding::Gbk => {
            let mut decoder = encoding_rs::GBK.new_decoder_without_bom_handling();
            out.reserve(
                decoder
                    .max_utf8_buffer_length_without_replacement(bytes.len())
                    .unwrap_or(bytes.len() * 3),
            );
            let (result, _) = decoder.decode_to_string_without_replacement(bytes, out, true);
            match result {
                encoding_rs::DecoderResult::InputEmpty => Ok(()),
                _ => Err(fatal(
                    path,
                    Some(line),
                    Some(format!("{col} ({name})")),
                    "bytes that are not valid GBK; the mapping declares gbk (is the file UTF-8?)",
                )),
            }
        }
    }
}

/// `bytes` decoded with undecodable bytes replaced (for the quarantine).
fn lossy(encoding: TextEncoding, bytes: &[u8]) -> String {
    match encoding {
        TextEncoding::Utf8 => String::from_utf8_lossy(bytes).into_owned(),
        TextEncoding::Gbk => encoding_rs::GBK
            .decode_without_bom_handling(bytes)
            .0
            .into_owned(),
    }
}

/// Put `v` in `slot`, reusing the slot's allocation.
fn set_slot(slot: &mut Option<String>, v: &str) {
    match slot {
        Some(s) => {
            s.clear();
            s.push_str(v);
        }
        None => *slot = Some(v.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LEADS: &str = "lead_id,cust_kind,cust_name,tel\nL1,IND,张伟,13812345678\nL2,IND,\"王, 芳\",13912345678\nL3,ORG,\"某\"\"公司\"\"\",\n";

    /// Read `bytes` as a file of `system`'s `entity`: every record decoded,
    /// or the error that refused the file.
    fn read_all(bytes: &[u8], system: &str, entity: &str) -> Result<(u64, u64), IngestError> {
        let catalog = crate::schema::Catalog::embedded().unwrap();
        let mapping = catalog.entity(system, entity).unwrap().clone();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("input");
        std::fs::write(&path, bytes).unwrap();
        let needed: Vec<String> = ["lead_id", "cust_name", "tel", "partyId"]
            .map(str::to_string)
            .to_vec();
        let caps = Caps {
            record_bytes: 512,
            field_bytes: 128,
        };
        let counter = Arc::new(AtomicU64::new(0));
        let mut rdr = open(&path, &mapping, &needed, &[], 100, caps, counter.clone())?;
        let layout = rdr.layout();
        let (mut rows, mut rejected) = (0, 0);
        let mut out = vec![None; needed.len()];
        let mut scratch = Vec::new();
        while let Some(raw) = rdr.next_raw()? {
            match layout.decode(&raw, &mut out, &mut scratch)? {
                RowResult::Row(_) => rows += 1,
                RowResult::Malformed { .. } => {
                    // The quarantine gets the row as read, as JSON.
                    let json = layout.raw_json(&raw, &scratch);
                    assert!(serde_json::from_str::<serde_json::Value>(&json).is_ok());
                    rejected += 1;
                }
            }
        }
        assert!(counter.load(std::sync::atomic::Ordering::Relaxed) <= bytes.len() as u64);
        Ok((rows, rejected))
    }

    #[test]
    fn quoted_fields_with_commas_and_doubled_quotes_read_as_csv_does() {
        assert_eq!(
            read_all(LEADS.as_bytes(), "telesales", "customer").unwrap(),
            (3, 0)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 64,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn random_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..2000),
            jsonl in any::<bool>(),
        ) {
            let (system, entity) = if jsonl { ("claims", "customer") } else { ("telesales", "customer") };
            match read_all(&bytes, system, entity) {
                Ok(_) | Err(IngestError::Unreadable { .. }) => {}
                Err(e) => panic!("{e}"),
            }
        }

        #[test]
        fn mutated_extracts_load_or_quarantine_every_record(
            edits in proptest::collection::vec((0usize..400, prop_oneof![
                Just(b'"'), Just(b'\n'), Just(b','), Just(0u8), Just(0xffu8), any::<u8>()
            ]), 1..8),
        ) {
            let mut input = LEADS.as_bytes().to_vec();
            for (at, b) in edits {
                // The header stays, so the file is always a leads file.
                let at = 40 + at % (input.len() - 40 + 1);
                input.insert(at, b);
            }
            let lines = input.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count() as u64;
            let (rows, rejected) = read_all(&input, "telesales", "customer").unwrap();
            // A record spans one line or more (quoted line ends): never more
            // records than data lines.
            prop_assert!(rows + rejected < lines, "{rows} + {rejected} > {}", lines - 1);
        }
    }
}
