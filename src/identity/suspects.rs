//! Suspected duplicate groups: customers linked by weak-rule pairs, for a
//! data steward to confirm (merge) or reject.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use datafusion::arrow::array::RecordBatch;
use datafusion::prelude::SessionContext;
use sha2::{Digest, Sha256};

use super::IdentityError;
use super::engine::{Dataset, Outcome};
use super::explain::explain_pair;
use super::load::{collect, micros, utf8};
use crate::lake::Lake;
use crate::schema::Catalog;
use crate::schema::row::{BatchBuilder, Cell};
use crate::schema::rules::Rules;

/// One member row of `suspect_group`.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub group_id: String,
    pub member: String,
    pub customer_id: Option<String>,
    pub rule: String,
    pub score: Option<f64>,
    pub detail: Option<String>,
    pub status: String,
    pub created_at: i64,
    pub decided_by: Option<String>,
    pub decided_at: Option<i64>,
}

pub(crate) async fn load(ctx: &SessionContext, have: bool) -> Result<Vec<Member>, IdentityError> {
    if !have {
        return Ok(Vec::new());
    }
    let Some(b) = collect(ctx, "SELECT * FROM suspect_group ORDER BY group_id, member").await?
    else {
        return Ok(Vec::new());
    };
    from_batch(&b)
}

fn from_batch(b: &RecordBatch) -> Result<Vec<Member>, IdentityError> {
    use datafusion::arrow::array::{Array, AsArray, StringArray};
    use datafusion::arrow::compute::cast;
    use datafusion::arrow::datatypes::{DataType, Float64Type};
    let (g, m, c, r, d, st, by) = (
        utf8(b, "group_id")?,
        utf8(b, "member")?,
        utf8(b, "customer_id")?,
        utf8(b, "rule")?,
        utf8(b, "detail")?,
        utf8(b, "status")?,
        utf8(b, "decided_by")?,
    );
    let (created, decided) = (micros(b, "created_at")?, micros(b, "decided_at")?);
    let score = b
        .column_by_name("score")
        .map(|c| cast(c, &DataType::Float64))
        .transpose()?;
    let score = score.as_ref().map(|a| a.as_primitive::<Float64Type>());
    let o = |a: &StringArray, i: usize| a.is_valid(i).then(|| a.value(i).to_string());
    Ok((0..b.num_rows())
        .map(|i| Member {
            group_id: g.value(i).to_string(),
            member: m.value(i).to_string(),
            customer_id: o(&c, i),
            rule: r.value(i).to_string(),
            score: score.and_then(|a| a.is_valid(i).then(|| a.value(i))),
            detail: o(&d, i),
            status: st.value(i).to_string(),
            created_at: created[i].unwrap_or(0),
            decided_by: o(&by, i),
            decided_at: decided[i],
        })
        .collect())
}

fn find(parent: &mut HashMap<u32, u32>, x: u32) -> u32 {
    let mut r = x;
    while let Some(&p) = parent.get(&r) {
        if p == r {
            break;
        }
        r = p;
    }
    parent.insert(x, r);
    r
}

/// The groups after a run: decided groups are history and stay; open
/// groups are recomputed from the pairs.
pub(crate) fn groups(
    rules: &Rules,
    data: &Dataset,
    outcome: &Outcome,
    cluster_of: &[u32],
    ids: &super::engine::Keys,
    before: &[Member],
    now: i64,
) -> Vec<Member> {
    // Components of customers connected by suspect pairs.
    let mut parent: HashMap<u32, u32> = HashMap::new();
    for s in &outcome.suspects {
        let (a, b) = (cluster_of[s.a as usize], cluster_of[s.b as usize]);
        parent.entry(a).or_insert(a);
        parent.entry(b).or_insert(b);
        let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
        if ra != rb {
            parent.insert(ra.max(rb), ra.min(rb));
        }
    }
    let mut comps: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (k, s) in outcome.suspects.iter().enumerate() {
        let root = find(&mut parent, cluster_of[s.a as usize]);
        comps.entry(root).or_default().push(k);
    }
    let decided: HashMap<&str, ()> = before
        .iter()
        .filter(|m| m.status != "open")
        .map(|m| (m.group_id.as_str(), ()))
        .collect();
    let created: HashMap<&str, i64> = before
        .iter()
        .map(|m| (m.group_id.as_str(), m.created_at))
        .collect();
    let mut out: Vec<Member> = before
        .iter()
        .filter(|m| m.status != "open")
        .cloned()
        .collect();
    for edges in comps.values() {
        // Each member's best pair.
        let mut best: BTreeMap<u32, (f64, u32, usize)> = BTreeMap::new();
        for &k in edges {
            let s = &outcome.suspects[k];
            for (x, y) in [(s.a, s.b), (s.b, s.a)] {
                let e = best.entry(x).or_insert((f64::MIN, y, s.profile));
                if s.score > e.0 {
                    *e = (s.score, y, s.profile);
                }
            }
        }
        let keys: BTreeSet<&str> = best.keys().map(|&r| &data.keys[r as usize]).collect();
        let mut h = Sha256::new();
        for k in &keys {
            h.update(k.as_bytes());
            h.update(b"\n");
        }
        let group_id = format!("SG{}", &hex::encode(h.finalize())[..12]);
        if decided.contains_key(group_id.as_str()) {
            continue;
        }
        let at = created.get(group_id.as_str()).copied().unwrap_or(now);
        for (&r, &(score, partner, profile)) in &best {
            let (_, detail) = explain_pair(rules, data, profile, r as usize, partner as usize);
            let detail = serde_json::json!({
                "matched_with": &data.keys[partner as usize],
                "fields": serde_json::from_str::<serde_json::Value>(&detail).unwrap_or_default(),
            });
            out.push(Member {
                group_id: group_id.clone(),
                member: data.keys[r as usize].to_string(),
                customer_id: Some(ids[cluster_of[r as usize] as usize].to_string()),
                rule: format!("{}.similar", rules.profiles[profile].name),
                score: Some((score * 1000.0).round() / 1000.0),
                detail: Some(detail.to_string()),
                status: "open".into(),
                created_at: at,
                decided_by: None,
                decided_at: None,
            });
        }
    }
    out.sort_by(|a, b| a.group_id.cmp(&b.group_id).then(a.member.cmp(&b.member)));
    out
}

pub(crate) fn to_batch(catalog: &Catalog, rows: &[Member]) -> Result<RecordBatch, IdentityError> {
    let def = catalog.table("suspect_group")?;
    let mut b = BatchBuilder::new(def, false);
    let s = |v: &Option<String>| v.clone().map_or(Cell::Null, Cell::Str);
    for m in rows {
        b.push(
            &[
                Cell::Str(m.group_id.clone()),
                Cell::Str(m.member.clone()),
                s(&m.customer_id),
                Cell::Str(m.rule.clone()),
                m.score.map_or(Cell::Null, Cell::F64),
                s(&m.detail),
                Cell::Str(m.status.clone()),
                Cell::Ts(m.created_at),
                s(&m.decided_by),
                m.decided_at.map_or(Cell::Null, Cell::Ts),
            ],
            None,
        );
    }
    b.finish().map_err(IdentityError::from)
}

/// How many open groups the rows hold.
pub(crate) fn open_groups(rows: &[Member]) -> usize {
    rows.iter()
        .filter(|m| m.status == "open")
        .map(|m| m.group_id.as_str())
        .collect::<BTreeSet<_>>()
        .len()
}

/// Replace the table's content when it changed. Returns the number of
/// open groups.
pub(crate) async fn write(
    lake: &Lake,
    catalog: &Catalog,
    before: &[Member],
    rows: Vec<Member>,
) -> Result<usize, IdentityError> {
    let count = open_groups(&rows);
    let mut sorted_before = before.to_vec();
    sorted_before.sort_by(|a, b| a.group_id.cmp(&b.group_id).then(a.member.cmp(&b.member)));
    if sorted_before == rows {
        return Ok(count);
    }
    let batch = to_batch(catalog, &rows)?;
    super::overwrite_batch(lake, catalog, "suspect_group", batch).await?;
    Ok(count)
}

/// Register `suspect_group` in `ctx`; false when it does not exist yet.
pub async fn register(
    ctx: &SessionContext,
    lake: &Lake,
    catalog: &Catalog,
) -> Result<bool, IdentityError> {
    Ok(
        !super::load::register(ctx, lake, catalog, &["suspect_group"])
            .await?
            .is_empty(),
    )
}

/// Every member row, ordered by group and member.
pub async fn load_public(ctx: &SessionContext, have: bool) -> Result<Vec<Member>, IdentityError> {
    load(ctx, have).await
}

/// The member rows of the first `limit` groups (by id) with `status`: the
/// groups are chosen in the scan, so a long list is never read whole.
pub async fn load_groups(
    ctx: &SessionContext,
    have: bool,
    status: &str,
    limit: usize,
) -> Result<Vec<Member>, IdentityError> {
    if !have {
        return Ok(Vec::new());
    }
    let status = status.replace('\'', "''");
    let sql = format!(
        "SELECT * FROM suspect_group WHERE status = '{status}' AND group_id IN \
         (SELECT DISTINCT group_id FROM suspect_group WHERE status = '{status}' \
          ORDER BY group_id LIMIT {limit}) ORDER BY group_id, member"
    );
    let Some(b) = collect(ctx, &sql).await? else {
        return Ok(Vec::new());
    };
    from_batch(&b)
}
