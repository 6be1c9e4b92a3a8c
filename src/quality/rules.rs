//! The quality rules: generated from the schemas (a completeness rule per
//! required field, a validity rule per validated field, key and customer
//! uniqueness, consistency of source records with their golden record,
//! timeliness of landing) and written in SQL (`sql/quality/*.sql`), each
//! compiled into one check of a table's per-record query.
//!
//! A table's checks run as one `SELECT` with a row per record: for each
//! check a boolean (`NULL` where the check does not apply or the record
//! is outside the run's sample) and, for a failing record only, the value
//! as the configured role (a steward) would see it.

use std::fmt::Write as _;

use crate::config::{Access, Config, QualityTable};
use crate::schema::{Catalog, FieldDef, FieldType, Level, Required, TableDef, Validator};
use crate::security::{Masks, Policy, Role};

use super::sql_rules::{Inlined, inline};
pub use super::sql_rules::{SqlRule, sql_rules};
use super::{QualityError, Scope};

/// One check of one table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    /// complete, valid, unique_key, unique_customer, consistent, timely, or
    /// the name of a rule of `sql/quality/`.
    pub rule: String,
    pub dimension: String,
    pub field: String,
    pub level: Level,
    pub description: String,
    /// SQL: does the check apply to the record?
    #[serde(skip)]
    applies: String,
    /// SQL: does the record pass (`NULL` counts as failing)?
    #[serde(skip)]
    passes: String,
    /// SQL: the failing value as the configured role sees it.
    #[serde(skip)]
    value: String,
    /// SQL: the owning team when the rule names its own.
    #[serde(skip)]
    pub(super) team: Option<String>,
}

/// A table's checks and how its records are keyed and owned.
#[derive(Debug, Clone)]
pub struct TablePlan {
    pub table: String,
    pub checks: Vec<Check>,
    key: String,
    /// The key's fields as text, in order (the record key joins them with
    /// `|`, as `concat_ws` does).
    key_parts: Vec<String>,
    joins: Vec<Join>,
    /// The key-uniqueness join: (its index in `joins`, a query counting
    /// the duplicated keys). With none the join is left out.
    duplicates: Option<(usize, Duplicates)>,
    /// The first-load join: (its index in `joins`, a query of each
    /// source's first load, `source_system` and `first_loaded`).
    first_loads: Option<(usize, String)>,
    source: String,
    team: String,
    agent: String,
    filter: String,
}

/// The counts of a table's duplicated keys.
#[derive(Debug, Clone)]
pub struct Duplicates {
    /// Keys whose hashes are shared by several rows: none means no key is
    /// duplicated (only a count above zero needs the exact one).
    pub hashed: String,
    /// Keys held by several rows.
    pub exact: String,
}

/// What a plan's lookups found before its query is built: whether the
/// table has duplicated keys, and each source system's first load as a
/// SQL literal. A table with few sources takes them as constants and no
/// duplicated key needs no join: joins copy every row of the table.
#[derive(Debug, Clone, Default)]
pub struct Lookups {
    pub duplicates: bool,
    pub first_loads: Option<Vec<(String, String)>>,
    /// The table has no more records than the table its first join looks
    /// up (see [`TablePlan::first_lookup`]): the join builds on the records.
    pub records_smaller: bool,
}

/// The most first loads written into a query as constants.
const MAX_INLINE_SOURCES: usize = 256;

/// The columns of a plan's query, in order: the key's fields `k0`, `k1`,
/// …, `source_system`, `owning_team`, `agent_id`, then for check i `c{i}`
/// (boolean: `NULL` where it does not apply), `v{i}` (text, failing
/// records only) and, for rules naming their own team, `t{i}`.
pub struct Compiled {
    pub sql: String,
    /// Indexes into [`TablePlan::checks`] of the checks in the query.
    pub checks: Vec<usize>,
}

impl TablePlan {
    /// The record key as text: the table's key fields joined with `|`.
    pub fn key_sql(&self) -> &str {
        &self.key
    }

    /// The table the first join looks up, when it is a table (not a
    /// query): which of the two is smaller decides which side the join
    /// builds.
    pub fn first_lookup(&self) -> Option<&str> {
        let j = self.joins.first()?;
        (!j.relation.starts_with('(')).then_some(j.relation.as_str())
    }

    /// How many fields the record key has (the query's `k0`, `k1`, …).
    pub fn key_len(&self) -> usize {
        self.key_parts.len()
    }

    /// The queries that find the plan's [`Lookups`]: the duplicated keys
    /// (counts) and the sources' first loads, where the plan has them.
    pub fn lookup_queries(&self) -> (Option<&Duplicates>, Option<&str>) {
        (
            self.duplicates.as_ref().map(|(_, q)| q),
            self.first_loads.as_ref().map(|(_, q)| q.as_str()),
        )
    }

    /// The query of the checks in `scope`, or `None` when none is.
    ///
    /// Each check is `quality_check(applies, passes)` and its value is
    /// shown only where that is false: the same expression twice, which
    /// the planner evaluates once (a validator runs once per record).
    pub fn compile(&self, scope: &Scope, lookups: &Lookups) -> Option<Compiled> {
        let picked: Vec<usize> = (0..self.checks.len())
            .filter(|i| scope.includes(self.checks[*i].level))
            .collect();
        if picked.is_empty() {
            return None;
        }
        let mut sql = "SELECT ".to_string();
        for (i, k) in self.key_parts.iter().enumerate() {
            let _ = write!(sql, "{k} AS k{i},\n  ");
        }
        let _ = write!(
            sql,
            "{source} AS source_system,\n  {team} AS owning_team,\n  {agent} AS agent_id",
            source = self.source,
            team = self.team,
            agent = self.agent,
        );
        let no_duplicates = self.duplicates.is_some() && !lookups.duplicates;
        let first_loaded = match (&self.first_loads, &lookups.first_loads) {
            (Some(_), Some(loads)) if loads.len() <= MAX_INLINE_SOURCES => {
                if loads.is_empty() {
                    "CAST(NULL AS TIMESTAMP)".to_string()
                } else {
                    let mut e = "CASE t.source_system".to_string();
                    for (source, at) in loads {
                        let _ = write!(e, " WHEN {} THEN {at}", quote(source));
                    }
                    e.push_str(" END");
                    e
                }
            }
            _ => FIRST_LOADED.to_string(),
        };
        for (n, i) in picked.iter().enumerate() {
            let c = &self.checks[*i];
            let rate = scope.rates[&c.level];
            let applies = c.applies.replace(FIRST_LOADED, &first_loaded);
            let applies = if rate >= 1.0 {
                applies
            } else {
                format!(
                    "({applies}) AND quality_sample({}, {}) < {rate}",
                    self.key, scope.seed
                )
            };
            let passes = if no_duplicates && c.rule == "unique_key" {
                "true"
            } else {
                &c.passes
            };
            let check = format!("quality_check({applies}, {passes})");
            let _ = write!(
                sql,
                ",\n  {check} AS c{n},\n  CASE WHEN NOT {check} THEN {value} END AS v{n}",
                value = c.value,
            );
            if let Some(team) = &c.team {
                let _ = write!(sql, ",\n  {team} AS t{n}");
            }
        }
        // Each join builds its lookup (a table's narrow columns or a small
        // result) and streams the table's records through it: the lookup
        // is written left of a RIGHT JOIN, and the rules' context builds
        // left sides as written (see `run::prepare`).
        let mut from = format!("{} t", self.table);
        let mut nested = false;
        for (i, j) in self.joins.iter().enumerate() {
            let skip = self
                .duplicates
                .as_ref()
                .is_some_and(|(d, _)| *d == i && no_duplicates)
                || self
                    .first_loads
                    .as_ref()
                    .is_some_and(|(f, _)| *f == i && !first_loaded.contains(FIRST_LOADED));
            if !skip {
                from = if !nested && i == 0 && lookups.records_smaller {
                    format!("{from} LEFT JOIN {} {}\n  ON {}", j.relation, j.alias, j.on)
                } else if nested {
                    format!(
                        "{} {} RIGHT JOIN ({from})\n  ON {}",
                        j.relation, j.alias, j.on
                    )
                } else {
                    format!(
                        "{} {} RIGHT JOIN {from}\n  ON {}",
                        j.relation, j.alias, j.on
                    )
                };
                nested = true;
            }
        }
        let _ = write!(sql, "\nFROM {from}");
        if !self.filter.trim().is_empty() {
            let _ = write!(sql, "\nWHERE {}", self.filter);
        }
        Some(Compiled {
            sql,
            checks: picked,
        })
    }
}

/// A source's first load in a check: the joined column, or a constant
/// once the lookup has found it.
const FIRST_LOADED: &str = "qb.first_loaded";

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `a` and `b` (values of `f`'s type) agree after trimming and folding
/// case (`quality_same`; text compared as it is stored, other types as
/// their text).
fn same(f: &FieldDef, a: &str, b: &str) -> String {
    match f.ty {
        FieldType::String => format!("quality_same({a}, {b})"),
        _ => format!("quality_same(CAST({a} AS VARCHAR), CAST({b} AS VARCHAR))"),
    }
}

/// `a` (of `f`) and `b` (of `r`) agree: values of one non-text type are
/// compared as values (their text is canonical: equal text, equal value),
/// anything else as text by [`same`].
fn agree(f: &FieldDef, r: &FieldDef, a: &str, b: &str) -> String {
    if f.ty == r.ty && f.ty != FieldType::String {
        format!("{a} = {b}")
    } else {
        same(f, a, b)
    }
}

fn filled(f: &FieldDef, col: &str) -> String {
    match f.ty {
        // `col IS NOT NULL AND trim(col) <> ''` without trimming a copy.
        FieldType::String => format!("quality_filled({col})"),
        _ => format!("{col} IS NOT NULL"),
    }
}

/// Builds the checks of one table.
struct Builder<'a> {
    catalog: &'a Catalog,
    role: &'a Role,
    def: &'a TableDef,
}

impl Builder<'_> {
    /// `col` (a value of `f`) as the role sees it, as text.
    fn shown(&self, f: &FieldDef, col: &str) -> String {
        match self.role.access(&self.def.name, &f.name, f.level) {
            Access::Clear => format!("CAST({col} AS VARCHAR)"),
            Access::Masked => Masks::sql(&f.mask, &f.ty, col),
            Access::Absent => "CAST(NULL AS VARCHAR)".into(),
        }
    }

    fn completeness(&self, f: &FieldDef) -> Option<Check> {
        let applies = match &f.required {
            Required::Always(false) => return None,
            Required::Always(true) => "true".to_string(),
            Required::ForTypes(types) => {
                self.def.field("customer_type")?;
                let list: Vec<String> = types.iter().map(|t| quote(t)).collect();
                format!("t.customer_type IN ({})", list.join(", "))
            }
        };
        let col = format!("t.{}", f.name);
        Some(Check {
            rule: "complete".into(),
            dimension: "completeness".into(),
            field: f.name.clone(),
            level: f.level,
            description: format!("{} is filled where required ({})", f.name, {
                match &f.required {
                    Required::ForTypes(t) => t.join(", "),
                    _ => "always".into(),
                }
            }),
            applies,
            passes: filled(f, &col),
            value: "CAST(NULL AS VARCHAR)".into(),
            team: None,
        })
    }

    fn validity(&self, f: &FieldDef) -> Option<Check> {
        let col = format!("t.{}", f.name);
        let (passes, what) = match f.validator {
            // Typed fields: a stored value is of its type; what ingest
            // could not read as one is counted from the quarantine.
            Validator::None if f.ty != FieldType::String => {
                ("true".to_string(), format!("a {}", f.ty))
            }
            Validator::None => return None,
            Validator::Code => {
                let set = f.codes.as_deref()?;
                let codes = self.catalog.codes.get(set)?;
                let list: Vec<String> = codes.iter().map(|c| quote(c)).collect();
                (
                    format!("{col} IN ({})", list.join(", ")),
                    format!("a standard {set} code"),
                )
            }
            Validator::NonNegative => (format!("{col} >= 0"), "not negative".into()),
            v => {
                let context = match v {
                    Validator::CustomerName if self.def.field("customer_type").is_some() => {
                        "t.customer_type"
                    }
                    Validator::IdNumber if self.def.field("id_type").is_some() => "t.id_type",
                    _ => "CAST(NULL AS VARCHAR)",
                };
                // Text goes to the function as it is stored (no copy).
                let value = match f.ty {
                    FieldType::String => col.to_string(),
                    _ => format!("CAST({col} AS VARCHAR)"),
                };
                (
                    format!("quality_valid('{}', {value}, {context})", v.name()),
                    format!("a valid {}", v.name()),
                )
            }
        };
        Some(Check {
            rule: "valid".into(),
            dimension: "validity".into(),
            field: f.name.clone(),
            level: f.level,
            description: format!("a filled {} is {what}", f.name),
            applies: filled(f, &col),
            passes,
            value: self.shown(f, &col),
            team: None,
        })
    }
}

/// Every table's plan under `config` (its tables, consistency fields and
/// timeliness) and the rules of `sql/quality/`.
pub fn plans(config: &Config, catalog: &Catalog) -> Result<Vec<TablePlan>, QualityError> {
    let q = &config.quality;
    let policy = Policy::from_config(config)?;
    let role = policy.role(&q.issue_values_as).map_err(|_| {
        QualityError::Invalid(format!(
            "quality.issue_values_as {:?} is not a configured role",
            q.issue_values_as
        ))
    })?;
    let extra = sql_rules()?;
    for r in &extra {
        if !q.tables.contains_key(&r.table) {
            tracing::warn!(
                rule = %r.file,
                table = %r.table,
                "the rule's table is not among quality.tables; the rule is not run"
            );
        }
    }
    let mut out = Vec::new();
    for (name, cfg) in &q.tables {
        let def = catalog.table(name).map_err(|_| {
            QualityError::Invalid(format!(
                "quality.tables.{name}: there is no table {name:?} in the catalog"
            ))
        })?;
        out.push(plan(config, catalog, role, def, cfg, &extra)?);
    }
    Ok(out)
}

fn plan(
    config: &Config,
    catalog: &Catalog,
    role: &Role,
    def: &TableDef,
    cfg: &QualityTable,
    extra: &[SqlRule],
) -> Result<TablePlan, QualityError> {
    let q = &config.quality;
    let b = Builder { catalog, role, def };
    let name = &def.name;
    let keys: Vec<String> = def
        .key
        .iter()
        .map(|k| format!("CAST(t.{k} AS VARCHAR)"))
        .collect();
    let key = if keys.len() == 1 {
        keys[0].clone()
    } else {
        format!("concat_ws('|', {})", keys.join(", "))
    };
    // Text fields as they are stored: no copy of every record's key.
    let key_parts: Vec<String> = def
        .key
        .iter()
        .map(|k| match def.field(k).map(|f| &f.ty) {
            Some(FieldType::String) => format!("t.{k}"),
            _ => format!("CAST(t.{k} AS VARCHAR)"),
        })
        .collect();
    let mut checks = Vec::new();
    let mut joins = Vec::new();
    let uses_s = [&cfg.source, &cfg.team, &cfg.agent, &cfg.filter]
        .iter()
        .any(|e| e.contains("s."));
    if uses_s {
        if def.field("source_customer_id").is_none() {
            return Err(QualityError::Invalid(format!(
                "quality.tables.{name}: `s.` (the customer's source record) needs a source_customer_id field"
            )));
        }
        joins.push(Join::new(
            "source_customer",
            "s",
            "s.source_key = t.source_key",
        ));
    }
    for f in def.fields.iter().filter(|f| !f.system) {
        checks.extend(b.completeness(f));
        checks.extend(b.validity(f));
    }
    // Keys: no two records share one.
    let key_level = def
        .key
        .iter()
        .filter_map(|k| def.field(k))
        .map(|f| f.level)
        .max()
        .unwrap_or(Level::L2);
    let key_shown = if def
        .key
        .iter()
        .filter_map(|k| def.field(k))
        .all(|f| role.access(name, &f.name, f.level) == Access::Clear)
    {
        key.clone()
    } else {
        "CAST(NULL AS VARCHAR)".into()
    };
    // Joined on the key's own columns (no key text built for every row).
    let key_cols = def.key.join(", ");
    let on = def
        .key
        .iter()
        .map(|k| format!("qd.{k} = t.{k}"))
        .collect::<Vec<_>>()
        .join(" AND ");
    let duplicated =
        format!("SELECT {key_cols} FROM {name} GROUP BY {key_cols} HAVING count(*) > 1");
    let duplicates = Some((
        joins.len(),
        Duplicates {
            hashed: format!(
                "SELECT count(*) AS n FROM (SELECT h FROM (SELECT quality_key_hash({key_cols}) AS h FROM {name}) GROUP BY h HAVING count(*) > 1)"
            ),
            exact: format!("SELECT count(*) AS n FROM ({duplicated})"),
        },
    ));
    joins.push(Join::new(
        &format!(
            "(SELECT {key_cols}, true AS dup FROM {name} GROUP BY {key_cols} HAVING count(*) > 1)"
        ),
        "qd",
        &on,
    ));
    checks.push(Check {
        rule: "unique_key".into(),
        dimension: "uniqueness".into(),
        field: def.key.join("+"),
        level: key_level,
        description: format!(
            "no other {name} record has the key ({})",
            def.key.join(", ")
        ),
        applies: "true".into(),
        passes: "qd.dup IS NULL".into(),
        value: key_shown,
        team: None,
    });
    // Golden customers: one per real customer.
    if name == "customer" {
        joins.push(Join::new(
            "(SELECT g.customer_id FROM suspect_group g \
             JOIN (SELECT group_id, min(member) AS first FROM suspect_group WHERE status = 'open' GROUP BY group_id) f ON f.group_id = g.group_id \
             JOIN suspect_group fm ON fm.group_id = f.group_id AND fm.member = f.first \
             WHERE g.status = 'open' AND g.customer_id <> fm.customer_id GROUP BY g.customer_id)",
            "qu",
            "qu.customer_id = t.customer_id",
        ));
        checks.push(Check {
            rule: "unique_customer".into(),
            dimension: "uniqueness".into(),
            field: "customer_id".into(),
            level: def.field("customer_id").map_or(Level::L2, |f| f.level),
            description: "the customer is not a later member of an open suspect group (a likely duplicate of its first member)".into(),
            applies: "true".into(),
            passes: "qu.customer_id IS NULL".into(),
            value: "t.customer_id".into(),
            team: None,
        });
    }
    // Source records against their golden record.
    if name == "source_customer" && !q.consistency_fields.is_empty() {
        let golden = catalog.table("customer")?;
        let golden_fields = q
            .consistency_fields
            .iter()
            .filter(|f| golden.field(f).is_some())
            .map(|f| format!("g.{f}"))
            .collect::<Vec<_>>()
            .join(", ");
        // Each record finds its customer (a narrow lookup of every link),
        // then the golden fields of the customers with several records
        // (the only ones compared): the golden fields are copied once per
        // record, not first once per link and then again per record.
        joins.push(Join::new(
            "(SELECT source_key, customer_id FROM customer_xref)",
            "qx",
            "qx.source_key = t.source_key",
        ));
        joins.push(Join::new(
            &format!(
                "(SELECT m.customer_id, m.n, {golden_fields} \
                 FROM (SELECT customer_id, count(*) AS n FROM customer_xref GROUP BY customer_id HAVING count(*) > 1) m \
                 JOIN customer g ON g.customer_id = m.customer_id)"
            ),
            "qg",
            "qg.customer_id = qx.customer_id",
        ));
        for field in &q.consistency_fields {
            let (Some(f), Some(_)) = (def.field(field), golden.field(field)) else {
                return Err(QualityError::Invalid(format!(
                    "quality.consistency_fields: {field:?} is not a field of both source_customer and customer"
                )));
            };
            checks.push(Check {
                rule: "consistent".into(),
                dimension: "consistency".into(),
                field: field.clone(),
                level: f.level,
                description: format!(
                    "for a customer with several source records, {field} agrees with the golden record"
                ),
                applies: format!(
                    "qg.n > 1 AND {} AND {}",
                    filled(f, &format!("t.{field}")),
                    filled(f, &format!("qg.{field}"))
                ),
                passes: agree(
                    f,
                    golden.field(field).unwrap_or(f),
                    &format!("t.{field}"),
                    &format!("qg.{field}"),
                ),
                value: b.shown(f, &format!("t.{field}")),
                team: None,
            });
        }
    }
    // Agreement with an authoritative reference.
    for (i, a) in q.accuracy.iter().filter(|a| a.table == *name).enumerate() {
        let reference = catalog.table(&a.reference).map_err(|_| {
            QualityError::Invalid(format!(
                "quality.accuracy: there is no reference table {:?}",
                a.reference
            ))
        })?;
        let missing = |t: &TableDef, f: &str| {
            QualityError::Invalid(format!(
                "quality.accuracy ({} against {}): {f:?} is not a field of {}",
                a.table, a.reference, t.name
            ))
        };
        def.field(&a.key).ok_or_else(|| missing(def, &a.key))?;
        reference
            .field(&a.reference_key)
            .ok_or_else(|| missing(reference, &a.reference_key))?;
        let alias = format!("qa{i}");
        joins.push(Join::new(
            &a.reference,
            &alias,
            &format!("{alias}.{} = t.{}", a.reference_key, a.key),
        ));
        for (field, theirs) in &a.fields {
            let f = def.field(field).ok_or_else(|| missing(def, field))?;
            let r = reference
                .field(theirs)
                .ok_or_else(|| missing(reference, theirs))?;
            let ours = format!("t.{field}");
            let ref_col = format!("{alias}.{theirs}");
            checks.push(Check {
                rule: "accurate".into(),
                dimension: "accuracy".into(),
                field: field.clone(),
                level: f.level,
                description: format!(
                    "{field} agrees with {theirs} of {} (matched on {})",
                    a.reference, a.key
                ),
                applies: format!(
                    "{alias}.{} IS NOT NULL AND {} AND {}",
                    a.reference_key,
                    filled(f, &ours),
                    filled(r, &ref_col)
                ),
                passes: agree(f, r, &ours, &ref_col),
                value: b.shown(f, &ours),
                team: None,
            });
        }
    }
    // Landing within T+N days of the change in the source.
    let mut first_loads = None;
    if let (Some(updated), Some(_)) = (def.field("updated_at"), def.field("ingested_at"))
        && def.field("source_system").is_some()
    {
        let days = q.timeliness_days;
        // A change counts from `days` before the source's first load.
        let first = format!(
            "SELECT source_system, min(started_at) - arrow_cast({}, 'Duration(Microsecond)') AS first_loaded \
             FROM ingest_batch WHERE table_name = {} GROUP BY source_system",
            i64::from(days) * 86_400_000_000,
            quote(name)
        );
        first_loads = Some((joins.len(), first.clone()));
        joins.push(Join::new(
            &format!("({first})"),
            "qb",
            "qb.source_system = t.source_system",
        ));
        checks.push(Check {
            rule: "timely".into(),
            dimension: "timeliness".into(),
            field: "updated_at".into(),
            level: updated.level,
            description: format!(
                "a change made in the source since the first load landed within {days} days of updated_at"
            ),
            // The window as a duration (whole days of microseconds, the
            // timestamps being UTC): plain integer arithmetic per record,
            // where adding an interval works through the calendar.
            applies: format!("t.updated_at IS NOT NULL AND t.updated_at >= {FIRST_LOADED}"),
            passes: format!(
                "t.ingested_at <= t.updated_at + arrow_cast({}, 'Duration(Microsecond)')",
                i64::from(days) * 86_400_000_000
            ),
            value: "concat(CAST(t.updated_at AS VARCHAR), ' landed ', CAST(t.ingested_at AS VARCHAR))"
                .into(),
            team: None,
        });
    }
    // Rules written in SQL, joined by record key.
    for (i, r) in extra.iter().filter(|r| r.table == *name).enumerate() {
        let f = def.field(&r.field).ok_or_else(|| {
            QualityError::Rule(
                r.file.clone(),
                format!("field {:?} is not a field of {name}", r.field),
            )
        })?;
        let alias = format!("qr{i}");
        let body = r.sql.replace("{team}", &format!("({})", r.team));
        // A rule reading one row per record of its own table (joined, if
        // at all, as the table's query already is) becomes expressions of
        // that query; any other is joined by record key.
        let parts = match inline(&body, name, &key_parts, &joins) {
            Some(p) => p,
            None => {
                joins.push(Join::new(
                    &format!("(SELECT record_key, bool_and(passed) AS passed, max(value) AS value, max(owning_team) AS owning_team FROM ({body}) GROUP BY record_key)"),
                    &alias,
                    &format!("{alias}.record_key = {key}"),
                ));
                Inlined {
                    applies: format!("{alias}.record_key IS NOT NULL"),
                    passes: format!("{alias}.passed"),
                    value: format!("{alias}.value"),
                    team: format!("{alias}.owning_team"),
                }
            }
        };
        checks.push(Check {
            rule: r.name.clone(),
            dimension: r.dimension.clone(),
            field: r.field.clone(),
            level: r.level.unwrap_or(f.level),
            description: r.description.clone(),
            applies: parts.applies,
            passes: parts.passes,
            // The rule's value is text: masked as text of the field.
            value: b.shown(
                &FieldDef {
                    ty: FieldType::String,
                    ..f.clone()
                },
                &parts.value,
            ),
            team: Some(parts.team),
        });
    }
    Ok(TablePlan {
        table: name.clone(),
        checks,
        key,
        key_parts,
        joins,
        duplicates,
        first_loads,
        source: cfg.source.clone(),
        team: cfg.team.clone(),
        agent: cfg.agent.clone(),
        filter: cfg.filter.clone(),
    })
}

/// A lookup joined to a table's records: `t LEFT JOIN relation alias ON on`.
#[derive(Debug, Clone)]
pub(super) struct Join {
    relation: String,
    alias: String,
    on: String,
}

impl Join {
    pub(super) fn new(relation: &str, alias: &str, on: &str) -> Self {
        Self {
            relation: relation.to_string(),
            alias: alias.to_string(),
            on: on.to_string(),
        }
    }

    /// As a clause after `FROM table t`.
    pub(super) fn left_join(&self) -> String {
        format!("LEFT JOIN {} {} ON {}", self.relation, self.alias, self.on)
    }
}
