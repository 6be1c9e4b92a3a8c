//! The audit journal's records in and out of the `audit_log` table.

use std::path::Path;

use datafusion::arrow::array::{Array, Int64Array, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;

use crate::lake::Lake;
use crate::schema::row::{BatchBuilder, Cell};
use crate::schema::{Catalog, TableDef};

use super::SecurityError;
use super::audit::{AuditRecord, JournalDir, read_records};

fn micros(at: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(at)
        .ok()
        .map(|t| t.timestamp_micros())
}

fn row(def: &TableDef, r: &AuditRecord) -> Vec<Cell> {
    let s = |v: &Option<String>| Cell::text(v.as_deref());
    let i = |v: Option<i64>| v.map_or(Cell::Null, Cell::I64);
    def.fields
        .iter()
        .map(|f| match f.name.as_str() {
            "event_id" => Cell::Str(r.event_id.clone()),
            "seq" => Cell::I64(r.seq as i64),
            "at" => Cell::ts(micros(&r.at)),
            "principal" => Cell::Str(r.principal.clone()),
            "role" => s(&r.role),
            "via" => s(&r.via),
            "action" => Cell::Str(r.action.clone()),
            "object" => s(&r.object),
            "detail" => s(&r.detail),
            "params" => s(&r.params),
            "tables" => s(&r.tables),
            "format" => s(&r.format),
            "rows" => i(r.rows),
            "bytes" => i(r.bytes),
            "outcome" => Cell::Str(r.outcome.clone()),
            "status" => i(r.status),
            "code" => i(r.code),
            "duration_ms" => i(r.duration_ms),
            "client" => s(&r.client),
            "request_id" => s(&r.request_id),
            "prev_hash" => Cell::Str(r.prev_hash.clone()),
            "hash" => Cell::Str(r.hash.clone()),
            "day" => Cell::text(r.at.get(..10)),
            _ => Cell::Null,
        })
        .collect()
}

/// Move the journal's sealed files (sealing the current one first) into
/// `audit_log`; returns the records moved. Each file is deleted once its
/// upsert committed; a crash in between moves it again, harmlessly.
pub async fn flush(
    lake: &Lake,
    catalog: &Catalog,
    dir: &JournalDir,
) -> Result<usize, SecurityError> {
    dir.seal()?;
    let def = catalog
        .table("audit_log")
        .map_err(|e| SecurityError::Internal(e.to_string()))?;
    let mut moved = 0;
    for path in dir.sealed()? {
        moved += move_file(lake, def, &path).await?;
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            // Another process moved the same file meanwhile (harmless).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(SecurityError::Audit(format!("{}: {e}", path.display()))),
        }
    }
    Ok(moved)
}

async fn move_file(lake: &Lake, def: &TableDef, path: &Path) -> Result<usize, SecurityError> {
    let records = read_records(path)?;
    if records.is_empty() {
        return Ok(0);
    }
    let mut b = BatchBuilder::new(def, false);
    for r in &records {
        b.push(&row(def, r), None);
    }
    let batch = b
        .finish()
        .map_err(|e| SecurityError::Internal(format!("audit batch: {e}")))?;
    let ctx = crate::lake::session::write_context();
    let df = ctx.read_batch(batch)?;
    crate::lake::upsert(lake, &ctx, def, df, true, Vec::new()).await?;
    Ok(records.len())
}

fn arrow(e: datafusion::arrow::error::ArrowError) -> SecurityError {
    SecurityError::Internal(format!("audit_log: {e}"))
}

fn column<'a>(b: &'a RecordBatch, name: &str) -> Option<&'a dyn Array> {
    b.column_by_name(name).map(|c| c.as_ref())
}

fn texts(b: &RecordBatch, name: &str) -> Result<Vec<Option<String>>, SecurityError> {
    let Some(c) = column(b, name) else {
        return Ok(vec![None; b.num_rows()]);
    };
    let c = cast(c, &DataType::Utf8).map_err(arrow)?;
    let a = c
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| SecurityError::Internal(format!("audit_log.{name}: not text")))?;
    Ok(a.iter().map(|v| v.map(str::to_string)).collect())
}

fn ints(b: &RecordBatch, name: &str) -> Result<Vec<Option<i64>>, SecurityError> {
    let Some(c) = column(b, name) else {
        return Ok(vec![None; b.num_rows()]);
    };
    let c = cast(c, &DataType::Int64).map_err(arrow)?;
    let a = c
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| SecurityError::Internal(format!("audit_log.{name}: not a number")))?;
    Ok(a.iter().collect())
}

fn times(b: &RecordBatch, name: &str) -> Result<Vec<Option<String>>, SecurityError> {
    let Some(c) = column(b, name) else {
        return Ok(vec![None; b.num_rows()]);
    };
    let c = cast(c, &DataType::Timestamp(TimeUnit::Microsecond, None)).map_err(arrow)?;
    let a = c
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .ok_or_else(|| SecurityError::Internal(format!("audit_log.{name}: not a time")))?;
    Ok(a.iter()
        .map(|v| {
            v.and_then(chrono::DateTime::from_timestamp_micros)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        })
        .collect())
}

/// Records read back from `audit_log` (e.g. `SELECT * FROM audit_log`).
pub fn records(batches: &[RecordBatch]) -> Result<Vec<AuditRecord>, SecurityError> {
    let mut out = Vec::new();
    for b in batches {
        let t = |n| texts(b, n);
        let i = |n| ints(b, n);
        let (event_id, at, principal, role, via, action, object) = (
            t("event_id")?,
            times(b, "at")?,
            t("principal")?,
            t("role")?,
            t("via")?,
            t("action")?,
            t("object")?,
        );
        let (detail, params, tables, format, outcome, client, request_id) = (
            t("detail")?,
            t("params")?,
            t("tables")?,
            t("format")?,
            t("outcome")?,
            t("client")?,
            t("request_id")?,
        );
        let (prev_hash, hash) = (t("prev_hash")?, t("hash")?);
        let (seq, rows, bytes, status, code, duration_ms) = (
            i("seq")?,
            i("rows")?,
            i("bytes")?,
            i("status")?,
            i("code")?,
            i("duration_ms")?,
        );
        for k in 0..b.num_rows() {
            out.push(AuditRecord {
                seq: seq[k].unwrap_or_default().max(0) as u64,
                event_id: event_id[k].clone().unwrap_or_default(),
                at: at[k].clone().unwrap_or_default(),
                principal: principal[k].clone().unwrap_or_default(),
                role: role[k].clone(),
                via: via[k].clone(),
                action: action[k].clone().unwrap_or_default(),
                object: object[k].clone(),
                detail: detail[k].clone(),
                params: params[k].clone(),
                tables: tables[k].clone(),
                format: format[k].clone(),
                rows: rows[k],
                bytes: bytes[k],
                outcome: outcome[k].clone().unwrap_or_default(),
                status: status[k],
                code: code[k],
                duration_ms: duration_ms[k],
                client: client[k].clone(),
                request_id: request_id[k].clone(),
                prev_hash: prev_hash[k].clone().unwrap_or_default(),
                hash: hash[k].clone().unwrap_or_default(),
            });
        }
    }
    Ok(out)
}
