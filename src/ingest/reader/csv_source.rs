//! CSV: records split with bounded memory, fields by `csv_core`.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use super::super::IngestError;
use super::super::split::{Piece, Splitter};
use super::{
    Caps, Layout, Raw, SourceReader, decode, fatal, missing_columns, next_piece, oversized, prefix,
};
use crate::domain::Reason;
use crate::schema::EntityMapping;

pub(super) struct CsvSource {
    split: Splitter<BufReader<File>>,
    /// Splits one record's bytes into fields.
    fields: csv_core::Reader,
    field_buf: Vec<u8>,
    ends_buf: Vec<usize>,
    layout: Arc<Layout>,
    caps: Caps,
}

impl CsvSource {
    pub(super) fn new(
        path: &Path,
        file: File,
        mapping: &EntityMapping,
        needed: &[String],
        mandatory: &[String],
        caps: Caps,
        counter: Arc<AtomicU64>,
    ) -> Result<Self, IngestError> {
        let delimiter = u8::try_from(mapping.delimiter).unwrap_or(b',');
        let mut src = Self {
            split: Splitter::csv(
                BufReader::with_capacity(1 << 20, file),
                delimiter,
                caps.record_bytes,
            )
            .counting(counter),
            fields: csv_core::ReaderBuilder::new()
                .delimiter(delimiter)
                .terminator(csv_core::Terminator::Any(b'\n'))
                .build(),
            field_buf: Vec::new(),
            ends_buf: Vec::new(),
            layout: Arc::new(Layout {
                path: path.to_path_buf(),
                encoding: mapping.encoding,
                header: Vec::new(),
                index: Vec::new(),
                needed: needed.to_vec(),
            }),
            caps,
        };
        let read_err = |e: std::io::Error| IngestError::io(path, e);
        let mut record = csv::ByteRecord::new();
        match src.split.next().map_err(read_err)? {
            None => {
                return Err(fatal(
                    path,
                    Some(1),
                    None,
                    "the file is empty (no header line)",
                ));
            }
            Some(Piece::Oversized { .. }) => {
                return Err(fatal(
                    path,
                    Some(1),
                    None,
                    format!(
                        "the header line is longer than {} KiB (ingest.max_record_kb); is this a CSV file?",
                        caps.record_bytes >> 10
                    ),
                ));
            }
            Some(Piece::Record { .. }) => src.parse(&mut record),
        }
        let mut header = Vec::with_capacity(record.len());
        for (i, f) in record.iter().enumerate() {
            let f = if i == 0 {
                f.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(f)
            } else {
                f
            };
            header.push(
                decode(path, mapping.encoding, f, 1, i + 1, "header")?
                    .trim()
                    .to_string(),
            );
        }
        missing_columns(path, &header, mandatory)?;
        let index = needed
            .iter()
            .map(|n| header.iter().position(|h| h == n))
            .collect();
        src.layout = Arc::new(Layout {
            path: path.to_path_buf(),
            encoding: mapping.encoding,
            header,
            index,
            needed: needed.to_vec(),
        });
        Ok(src)
    }

    /// The fields of the record the splitter holds.
    fn parse(&mut self, record: &mut csv::ByteRecord) {
        split_fields(
            &mut self.fields,
            self.split.record(),
            record,
            &mut self.field_buf,
            &mut self.ends_buf,
        );
    }
}

/// Split one record's bytes into `record`'s fields.
fn split_fields(
    core: &mut csv_core::Reader,
    input: &[u8],
    record: &mut csv::ByteRecord,
    out: &mut Vec<u8>,
    ends: &mut Vec<usize>,
) {
    use csv_core::ReadRecordResult as R;
    core.reset();
    record.clear();
    // Fields are never longer than the record.
    if out.len() < input.len() + 1 {
        out.resize(input.len() + 1, 0);
    }
    if ends.len() < 32 {
        ends.resize(32, 0);
    }
    let (mut inp, mut n_out, mut n_ends) = (input, 0, 0);
    let mut fed_end = false;
    loop {
        let (res, used, wrote, ended) =
            core.read_record(inp, &mut out[n_out..], &mut ends[n_ends..]);
        inp = &inp[used..];
        n_out += wrote;
        n_ends += ended;
        match res {
            R::InputEmpty if !fed_end => {
                // The record's bytes are all in: say so, to end it.
                fed_end = inp.is_empty();
            }
            R::InputEmpty => break,
            R::OutputFull => {
                let len = out.len() * 2;
                out.resize(len, 0);
            }
            R::OutputEndsFull => {
                let len = ends.len() * 2;
                ends.resize(len, 0);
            }
            R::Record | R::End => break,
        }
    }
    let mut start = 0;
    for &end in &ends[..n_ends] {
        record.push_field(&out[start..end]);
        start = end;
    }
}

impl SourceReader for CsvSource {
    fn next_raw(&mut self) -> Result<Option<Raw>, IngestError> {
        loop {
            let (line, last) = match next_piece(&mut self.split, &self.layout.path)? {
                None => return Ok(None),
                Some(Piece::Oversized {
                    line,
                    bytes,
                    open_quote,
                }) => {
                    let raw = self.split.record();
                    return Ok(Some(oversized(line, bytes, open_quote, self.caps, raw)));
                }
                Some(Piece::Record { line, last }) => (line, last),
            };
            if self.split.record().is_empty() {
                continue; // blank line
            }
            let mut record = csv::ByteRecord::new();
            self.parse(&mut record);
            if let Some((i, f)) = record
                .iter()
                .enumerate()
                .find(|(_, f)| f.len() > self.caps.field_bytes)
            {
                let name = self.layout.header.get(i).map_or("?", String::as_str);
                return Ok(Some(Raw::Rejected {
                    line,
                    reason: Reason::MalformedRow,
                    detail: format!(
                        "field {} ({name}) is {} bytes, over {} KiB (ingest.max_field_kb)",
                        i + 1,
                        f.len(),
                        self.caps.field_bytes >> 10
                    ),
                    raw: prefix(self.split.record()),
                }));
            }
            return Ok(Some(Raw::Csv { line, record, last }));
        }
    }

    fn layout(&self) -> Arc<Layout> {
        self.layout.clone()
    }
}
