//! The matching engine on any CSV file: `custlake dedupe`.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use super::IdentityError;
use super::engine::{self, Dataset, StrColumn};
use crate::schema::rules::Rules;

#[derive(Debug, Clone, serde::Serialize)]
pub struct DedupeReport {
    pub rows: usize,
    pub clusters: usize,
    pub candidate_pairs: usize,
    pub suspect_pairs: usize,
    pub oversized_blocks: usize,
    pub seconds: f64,
}

fn io(path: &Path, e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> IdentityError {
    IdentityError::File {
        path: path.to_path_buf(),
        source: e.into(),
    }
}

/// Cluster the rows of `input` and write `id,cluster_id` for every row, in
/// input order, to `output` (written to a temporary file and renamed, so
/// a failed run leaves no partial output).
pub fn dedupe(
    rules: &Rules,
    input: &Path,
    id_column: &str,
    output: &Path,
) -> Result<DedupeReport, IdentityError> {
    let started = Instant::now();
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .from_path(input)
        .map_err(|e| io(input, e))?;
    let headers = reader.headers().map_err(|e| io(input, e))?.clone();
    let column = |name: &str| headers.iter().position(|h| h.trim() == name);
    let id_at = column(id_column).ok_or_else(|| {
        IdentityError::Invalid(format!(
            "{}: no column {id_column:?} (columns: {})",
            input.display(),
            headers.iter().collect::<Vec<_>>().join(", ")
        ))
    })?;
    let mut at = Vec::new();
    for f in &rules.fields {
        at.push(column(f).ok_or_else(|| {
            IdentityError::Invalid(format!(
                "{}: the rules use field {f:?}, which is not a column (columns: {})",
                input.display(),
                headers.iter().collect::<Vec<_>>().join(", ")
            ))
        })?);
    }
    let mut ids: Vec<String> = Vec::new();
    let mut values: Vec<Vec<Option<String>>> = vec![Vec::new(); rules.fields.len()];
    let mut seen: HashMap<String, u64> = HashMap::new();
    for (n, rec) in reader.records().enumerate() {
        let line = n as u64 + 2;
        let rec = rec.map_err(|e| io(input, e))?;
        let id = rec.get(id_at).unwrap_or("").trim().to_string();
        if id.is_empty() {
            return Err(IdentityError::Invalid(format!(
                "{} line {line}: empty {id_column}",
                input.display()
            )));
        }
        if let Some(first) = seen.insert(id.clone(), line) {
            return Err(IdentityError::Invalid(format!(
                "{} line {line}: {id_column} {id:?} already used on line {first}; ids must be unique",
                input.display()
            )));
        }
        ids.push(id);
        for (f, &c) in at.iter().enumerate() {
            let raw = rec.get(c).unwrap_or("").trim();
            let v = rules.normalize[f]
                .iter()
                .fold(raw.to_string(), |v, nm| nm.apply(&v));
            values[f].push((!v.is_empty()).then_some(v));
        }
    }
    // Sort by id so that results do not depend on the row order.
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by(|a, b| ids[*a].cmp(&ids[*b]));
    let mut data = Dataset {
        keys: order.iter().map(|&i| ids[i].clone()).collect(),
        cols: Vec::new(),
    };
    for v in &values {
        let mut c = StrColumn::with_capacity(order.len());
        for &i in &order {
            c.push(v[i].as_deref());
        }
        data.cols.push(c);
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let out = engine::resolve(rules, &data, &[], threads);
    let mut cluster_of: HashMap<&str, &str> = HashMap::new();
    for (i, &c) in out.cluster.iter().enumerate() {
        cluster_of.insert(&data.keys[i], &data.keys[c as usize]);
    }
    let clusters = out
        .cluster
        .iter()
        .collect::<std::collections::HashSet<_>>()
        .len();
    let dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| io(output, e))?;
    {
        let mut w = csv::Writer::from_writer(std::io::BufWriter::new(tmp.as_file_mut()));
        w.write_record(["id", "cluster_id"])
            .map_err(|e| io(output, e))?;
        for id in &ids {
            let c = cluster_of.get(id.as_str()).copied().unwrap_or(id);
            w.write_record([id.as_str(), c])
                .map_err(|e| io(output, e))?;
        }
        w.flush().map_err(|e| io(output, e))?;
    }
    tmp.as_file_mut().flush().map_err(|e| io(output, e))?;
    tmp.persist(output).map_err(|e| io(output, e))?;
    Ok(DedupeReport {
        rows: ids.len(),
        clusters,
        candidate_pairs: out.stats.candidate_pairs,
        suspect_pairs: out.suspects.len(),
        oversized_blocks: out.stats.oversized_blocks,
        seconds: started.elapsed().as_secs_f64(),
    })
}
