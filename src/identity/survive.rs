//! Survivorship: each golden field from the most trusted source with a
//! value (source priority per field, then the most recently updated
//! record), remembering which record supplied it.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;

use super::IdentityError;
use super::engine::{Keys, Members};
use super::load::{KnownCustomers, Loaded, collect, register, utf8};
use super::resolve::GOLDEN;
use crate::lake::Lake;
use crate::schema::Catalog;
use crate::schema::row::{BatchBuilder, Cell};
use crate::schema::rules::Rules;

/// Rows per batch of golden records.
pub(crate) const CHUNK: usize = 65_536;

/// What golden records are computed from.
pub(crate) struct Golden<'a> {
    pub rules: &'a Rules,
    pub catalog: &'a Catalog,
    pub loaded: &'a Loaded,
    pub clusters: &'a Members,
    /// Each cluster's customer id.
    pub ids: &'a Keys,
    pub known: &'a KnownCustomers,
    pub now: i64,
    pub threads: usize,
}

impl Golden<'_> {
    /// Send the golden rows of the clusters whose content changed (or that
    /// are new), in cluster order, a slice of clusters at a time; returns
    /// how many. An error is sent too (it aborts the write) and returned.
    pub(crate) async fn send(&self, tx: super::BatchSender) -> Result<usize, IdentityError> {
        let mut rows = 0;
        let (slice, n) = (CHUNK * self.threads.max(1), self.clusters.len());
        for lo in (0..n).step_by(slice) {
            let batches = match self.rows(lo..(lo + slice).min(n)) {
                Ok(b) => b,
                Err(e) => {
                    super::abort(&tx, "golden records", &e).await;
                    return Err(e);
                }
            };
            for b in batches {
                rows += b.num_rows();
                if tx.send(Ok(b)).await.is_err() {
                    // The write stopped; it says why.
                    return Ok(rows);
                }
            }
        }
        Ok(rows)
    }

    /// The rows of some clusters, computed on `threads` threads, in
    /// cluster order, in batches of at most [`CHUNK`] rows.
    fn rows(&self, clusters: Range<usize>) -> Result<Vec<RecordBatch>, IdentityError> {
        let def = self.catalog.table("customer")?;
        let size = clusters.len().div_ceil(self.threads.max(1)).max(1);
        let (rules, l, known, now) = (self.rules, self.loaded, self.known, self.now);
        let (members, ids) = (self.clusters, self.ids);
        std::thread::scope(|s| {
            let parts: Vec<_> = clusters
                .clone()
                .step_by(size)
                .map(|lo| {
                    let part = lo..(lo + size).min(clusters.end);
                    s.spawn(move || golden_part(rules, def, l, (members, part), ids, known, now))
                })
                .collect();
            let mut out = Vec::new();
            for p in parts {
                out.extend(p.join().unwrap_or_else(|e| std::panic::resume_unwind(e))?);
            }
            Ok(out)
        })
    }
}

/// Where a column of `customer` comes from.
enum Source {
    Id,
    Province,
    Status,
    Survivorship,
    Created,
    Updated,
    Fingerprint,
    Golden(usize),
    Null,
}

/// `format!("{cell:?}")` of a golden value, into `out`: the fingerprint
/// hashes that text. The CJK ideographs and printable ASCII are written
/// as they are (what `Debug` does with them, without looking each up in
/// the printable tables); everything else as `Debug` escapes it.
fn debug_cell(cell: &Cell, out: &mut String) {
    use std::fmt::Write;
    match cell {
        Cell::Str(s) => {
            out.push_str("Str(\"");
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\'' | ' '..='~' | '\u{4E00}'..='\u{9FFF}' => out.push(c),
                    c => {
                        let _ = write!(out, "{}", c.escape_debug());
                    }
                }
            }
            out.push_str("\")");
        }
        other => {
            let _ = write!(out, "{other:?}");
        }
    }
}

fn golden_part(
    rules: &Rules,
    def: &crate::schema::TableDef,
    l: &Loaded,
    (clusters, part): (&Members, Range<usize>),
    ids: &Keys,
    known: &KnownCustomers,
    now: i64,
) -> Result<Vec<RecordBatch>, IdentityError> {
    use std::hash::Hasher;
    let together: Vec<(usize, usize)> = [("id_type", "id_number")]
        .iter()
        .filter_map(|(follower, leader)| {
            Some((
                GOLDEN.iter().position(|g| g == follower)?,
                GOLDEN.iter().position(|g| g == leader)?,
            ))
        })
        .collect();
    let address = GOLDEN.iter().position(|g| *g == "address");
    let sources: Vec<Source> = def
        .fields
        .iter()
        .map(|f| match f.name.as_str() {
            "customer_id" => Source::Id,
            "province" => Source::Province,
            "status" => Source::Status,
            "survivorship" => Source::Survivorship,
            "created_at" => Source::Created,
            "updated_at" => Source::Updated,
            "fingerprint" => Source::Fingerprint,
            other => GOLDEN
                .iter()
                .position(|g| *g == other)
                .map_or(Source::Null, Source::Golden),
        })
        .collect();
    // Per source system (a handful): its rank for each golden field.
    let mut systems: Vec<(&str, [usize; GOLDEN.len()])> = Vec::new();
    // Per member of a cluster: the record, its system's place in
    // `systems`, its recency (each found once, not once per field).
    let mut about: Vec<(u32, usize, i64)> = Vec::new();
    let mut builder = BatchBuilder::new(def, false);
    let (mut batches, mut rows) = (Vec::new(), 0usize);
    let mut text = String::new();
    let mut values: Vec<Cell> = vec![Cell::Null; GOLDEN.len()];
    let mut by_name: Vec<usize> = (0..GOLDEN.len()).collect();
    by_name.sort_by_key(|&f| GOLDEN[f]);
    let mut json: Vec<u8> = Vec::new();
    for c in part {
        let (members, id) = (clusters.get(c), &ids[c]);
        about.clear();
        for &m in members {
            let i = m as usize;
            let sys = l.system(i);
            let s = match systems.iter().position(|(name, _)| *name == sys) {
                Some(s) => s,
                None => {
                    let ranks = std::array::from_fn(|f| rules.survivorship.rank(GOLDEN[f], sys));
                    systems.push((sys, ranks));
                    systems.len() - 1
                }
            };
            let recency = -(l.updated.get(i).or(l.ingested.get(i)).unwrap_or(0));
            about.push((m, s, recency));
        }
        let mut chosen: Vec<Option<u32>> = vec![None; GOLDEN.len()];
        for (f, pick) in chosen.iter_mut().enumerate() {
            if together.iter().any(|(follower, _)| *follower == f) {
                continue;
            }
            let mut best: Option<(usize, i64, u32)> = None;
            for &(m, s, recency) in &about {
                if !l.has_golden(f, m as usize) {
                    continue;
                }
                let rank = systems[s].1[f];
                if best.is_none_or(|(r, t, _)| (rank, recency) < (r, t)) {
                    best = Some((rank, recency, m));
                }
            }
            *pick = best.map(|b| b.2);
        }
        for &(follower, leader) in &together {
            chosen[follower] = chosen[leader].filter(|&m| l.has_golden(follower, m as usize));
        }
        // The fingerprint: each field's value (as `Debug` writes it) and
        // the record it came from, hashed as `fnv` hashes its parts.
        let mut hash = crate::domain::Fnv64::default();
        for (f, name) in GOLDEN.iter().enumerate() {
            let Some(m) = chosen[f] else {
                values[f] = Cell::Null;
                hash.part(&[]);
                continue;
            };
            let i = m as usize;
            let cell = match (*name, l.golden(f, i), l.birth(i)) {
                ("birth_date", _, Some(d)) => Cell::Date(d),
                (_, Some(v), _) => Cell::Str(v.to_string()),
                _ => Cell::Null,
            };
            text.clear();
            debug_cell(&cell, &mut text);
            hash.part(text.as_bytes());
            hash.part(l.data.keys[i].as_bytes());
            values[f] = cell;
        }
        let fingerprint = format!("{:016x}", hash.finish());
        if known.unchanged(id, &fingerprint) {
            continue;
        }
        let prior = known.get(id);
        let province = match address.map(|a| &values[a]) {
            Some(Cell::Str(a)) => a
                .split('|')
                .next()
                .filter(|p| !p.is_empty())
                .map_or(Cell::Null, |p| Cell::Str(p.to_string())),
            _ => Cell::Null,
        };
        // Which record each field came from, as JSON with the fields in
        // name order (what serialising a map of them wrote).
        json.clear();
        json.push(b'{');
        for &f in &by_name {
            if let Some(m) = chosen[f] {
                if json.len() > 1 {
                    json.push(b',');
                }
                // Strings into a Vec: nothing can fail.
                let _ = serde_json::to_writer(&mut json, GOLDEN[f]);
                json.push(b':');
                let _ = serde_json::to_writer(&mut json, &l.data.keys[m as usize]);
            }
        }
        json.push(b'}');
        let mut survivorship = Some(String::from_utf8_lossy(&json).into_owned());
        let mut fingerprint = Some(fingerprint);
        let mut province = Some(province);
        let row: Vec<Cell> = sources
            .iter()
            .map(|s| match s {
                Source::Id => Cell::Str(id.to_string()),
                Source::Province => province.take().unwrap_or(Cell::Null),
                Source::Status => Cell::Str("active".into()),
                Source::Survivorship => survivorship.take().map_or(Cell::Null, Cell::Str),
                Source::Created => Cell::Ts(prior.map_or(now, |k| k.created_at)),
                Source::Updated => Cell::Ts(now),
                Source::Fingerprint => fingerprint.take().map_or(Cell::Null, Cell::Str),
                Source::Golden(f) => std::mem::replace(&mut values[*f], Cell::Null),
                Source::Null => Cell::Null,
            })
            .collect();
        builder.push(&row, None);
        rows += 1;
        if rows == CHUNK {
            batches.push(builder.finish()?);
            rows = 0;
        }
    }
    if rows > 0 {
        batches.push(builder.finish()?);
    }
    Ok(batches)
}

/// Mark retired customers (and those already pointing at them) as merged
/// into the final survivor.
pub(crate) async fn retire(
    lake: &Lake,
    catalog: &Catalog,
    retired: &[(String, String)],
    now: i64,
) -> Result<(), IdentityError> {
    if retired.is_empty() {
        return Ok(());
    }
    let into: HashMap<&str, &str> = retired
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let last = |start: &str| -> String {
        let mut id = start.to_string();
        for _ in 0..64 {
            match into.get(id.as_str()) {
                Some(next) => id = (*next).to_string(),
                None => break,
            }
        }
        id
    };
    let ctx = crate::lake::session::write_context();
    register(&ctx, lake, catalog, &["customer"]).await?;
    let gone: Vec<String> = retired.iter().map(|(a, _)| a.clone()).collect();
    ctx.register_batch("__gone", super::ids_batch(&gone)?)?;
    let Some(b) = collect(
        &ctx,
        "SELECT c.* FROM customer c WHERE c.customer_id IN (SELECT id FROM __gone) \
         OR c.merged_into IN (SELECT id FROM __gone)",
    )
    .await?
    else {
        return Ok(());
    };
    let id = utf8(&b, "customer_id")?;
    let merged = utf8(&b, "merged_into")?;
    let target: Vec<String> = (0..b.num_rows())
        .map(|i| {
            if into.contains_key(id.value(i)) {
                last(id.value(i))
            } else {
                last(merged.value(i))
            }
        })
        .collect();
    let def = catalog.table("customer")?;
    let mut columns: Vec<ArrayRef> = Vec::new();
    for f in &def.fields {
        let c = b
            .column_by_name(&f.name)
            .ok_or_else(|| IdentityError::Damaged(format!("customer has no column {}", f.name)))?
            .clone();
        columns.push(match f.name.as_str() {
            "status" => Arc::new(StringArray::from(vec!["retired"; b.num_rows()])),
            "merged_into" => Arc::new(StringArray::from(target.clone())),
            "updated_at" => {
                let a = datafusion::arrow::array::TimestampMicrosecondArray::from(vec![
                    now;
                    b.num_rows()
                ])
                .with_timezone("UTC");
                cast(&a, c.data_type())?
            }
            _ => c,
        });
    }
    let batch = RecordBatch::try_new(def.arrow_schema(), {
        let schema = def.arrow_schema();
        columns
            .into_iter()
            .zip(schema.fields())
            .map(|(c, f)| cast(&c, f.data_type()))
            .collect::<Result<Vec<_>, _>>()?
    })?;
    super::upsert_batch(lake, catalog, &ctx, "customer", batch).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_fingerprinted_as_debug_writes_it() {
        let mut samples: Vec<String> = [
            "",
            "王伟",
            "O'Brien \"Ltd\" \\ 1",
            "tab\there\nnew\r\u{0}",
            "e\u{301}clair \u{200b}zero width, \u{7f} del, \u{a0} nbsp",
            "广东省|深圳市|南山区|科技园路1号",
            "ｆｕｌｌ ｗｉｄｔｈ　全角",
            "emoji 😀 and 𠀀 (outside the fast path)",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Every ideograph the fast path writes as it is.
        let ideographs: Vec<char> = ('\u{4E00}'..='\u{9FFF}').collect();
        samples.extend(ideographs.chunks(64).map(|c| c.iter().collect::<String>()));
        samples.push((' '..='~').collect());
        let mut out = String::new();
        for s in samples {
            let cell = Cell::Str(s);
            out.clear();
            debug_cell(&cell, &mut out);
            assert_eq!(out, format!("{cell:?}"));
        }
        out.clear();
        debug_cell(&Cell::Date(-3), &mut out);
        assert_eq!(out, "Date(-3)");
    }
}
