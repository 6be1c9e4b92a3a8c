//! JSON Lines: one object per line, lines split with bounded memory.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use super::super::IngestError;
use super::super::split::{Piece, Splitter};
use super::{
    Caps, Layout, Raw, SourceReader, fatal, missing_columns, next_piece, oversized, prefix,
};
use crate::domain::Reason;
use crate::schema::TextEncoding;

pub(super) struct JsonlSource {
    split: Splitter<BufReader<File>>,
    layout: Arc<Layout>,
    mandatory: Vec<String>,
    seen_first: bool,
    caps: Caps,
}

impl JsonlSource {
    pub(super) fn new(
        path: &Path,
        file: File,
        needed: &[String],
        mandatory: &[String],
        caps: Caps,
        counter: Arc<AtomicU64>,
    ) -> Self {
        Self {
            split: Splitter::lines(BufReader::with_capacity(1 << 20, file), caps.record_bytes)
                .counting(counter),
            layout: Arc::new(Layout {
                path: path.to_path_buf(),
                encoding: TextEncoding::Utf8,
                header: Vec::new(),
                index: Vec::new(),
                needed: needed.to_vec(),
            }),
            mandatory: mandatory.to_vec(),
            seen_first: false,
            caps,
        }
    }

    /// The first record decides whether this is JSON Lines of the right
    /// entity at all.
    fn check_first(&self, line: u64, text: &str, last: bool) -> Result<(), IngestError> {
        let path = &self.layout.path;
        let obj: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(text).map_err(|e| {
                let what = if last {
                    "the file is truncated: the last line is not a complete JSON object"
                } else {
                    "not JSON Lines: the first record is not a JSON object"
                };
                fatal(
                    path,
                    Some(line),
                    Some(e.column().to_string()),
                    format!("{what} ({e})"),
                )
            })?;
        let keys: Vec<String> = obj.keys().cloned().collect();
        missing_columns(path, &keys, &self.mandatory).map_err(|e| match e {
            IngestError::Unreadable {
                file,
                column,
                message,
                ..
            } => IngestError::Unreadable {
                file,
                line: Some(line),
                column,
                message,
            },
            other => other,
        })
    }
}

impl SourceReader for JsonlSource {
    fn next_raw(&mut self) -> Result<Option<Raw>, IngestError> {
        loop {
            let (line, last) = match next_piece(&mut self.split, &self.layout.path)? {
                None => return Ok(None),
                Some(Piece::Oversized { line, bytes, .. }) => {
                    if !self.seen_first {
                        return Err(fatal(
                            &self.layout.path,
                            Some(line),
                            None,
                            format!(
                                "not JSON Lines: the first line is longer than {} KiB (ingest.max_record_kb)",
                                self.caps.record_bytes >> 10
                            ),
                        ));
                    }
                    let raw = self.split.record();
                    return Ok(Some(oversized(line, bytes, false, self.caps, raw)));
                }
                Some(Piece::Record { line, last }) => (line, last),
            };
            let bytes = self.split.record();
            let text = match std::str::from_utf8(bytes) {
                Ok(t) => t.trim(),
                Err(e) => {
                    let col = String::from_utf8_lossy(&bytes[..e.valid_up_to()])
                        .chars()
                        .count()
                        + 1;
                    if !self.seen_first {
                        return Err(fatal(
                            &self.layout.path,
                            Some(line),
                            Some(col.to_string()),
                            "invalid UTF-8 (JSON Lines must be UTF-8)",
                        ));
                    }
                    return Ok(Some(Raw::Rejected {
                        line,
                        reason: Reason::BadEncoding,
                        detail: format!(
                            "invalid UTF-8 at character {col} (JSON Lines must be UTF-8)"
                        ),
                        raw: prefix(bytes),
                    }));
                }
            };
            if text.is_empty() {
                continue;
            }
            if !self.seen_first {
                self.check_first(line, text, last)?;
                self.seen_first = true;
            }
            if let Some(rejected) = over_field_cap(line, text, self.caps.field_bytes) {
                return Ok(Some(rejected));
            }
            return Ok(Some(Raw::Json {
                line,
                text: text.to_string(),
                last,
            }));
        }
    }

    fn layout(&self) -> Arc<Layout> {
        self.layout.clone()
    }
}

/// A record with a field over `ingest.max_field_kb` (its value's bytes once
/// decoded; a nested value as JSON text), set aside as MALFORMED_ROW like an over-cap CSV
/// field. Only a record longer than the cap can hold such a field, so the
/// others are not parsed here; one that does not parse is left to the
/// worker, which names what is wrong with it.
fn over_field_cap(line: u64, text: &str, cap: usize) -> Option<Raw> {
    if text.len() <= cap {
        return None;
    }
    let obj: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text).ok()?;
    let (name, bytes) = obj
        .iter()
        .map(|(k, v)| {
            let bytes = match v {
                serde_json::Value::String(s) => s.len(),
                other => other.to_string().len(),
            };
            (k, bytes)
        })
        .find(|(_, bytes)| *bytes > cap)?;
    Some(Raw::Rejected {
        line,
        reason: Reason::MalformedRow,
        detail: format!(
            "field {name} is {bytes} bytes, over {} KiB (ingest.max_field_kb)",
            cap >> 10
        ),
        raw: prefix(text.as_bytes()),
    })
}
