//! map → normalise → validate: one source row becomes either a row of the
//! target table (appended to Arrow builders) or a list of reasons.

use std::collections::HashMap;

use chrono::{Datelike, NaiveDate, NaiveDateTime, TimeZone};

use crate::domain::{
    DomainError, Reason, beijing, date_from_days, days_since_epoch, fold_whitespace, parse_date,
    parse_fixed,
};
use crate::schema::row::Cell;
use crate::schema::{Catalog, EntityMapping, FieldDef, FieldType, Normalizer, TableDef, Validator};

/// One reason a row was rejected.
#[derive(Debug, Clone)]
pub(crate) struct Issue {
    pub(crate) code: Reason,
    pub(crate) field: String,
    pub(crate) value: Option<String>,
    pub(crate) detail: String,
}

enum Origin {
    /// Index into the reader's needed columns.
    Column(usize),
    SourceSystem,
    BatchId,
    IngestedAt,
    /// Month or day of another field.
    Partition {
        from: usize,
        format: &'static str,
    },
    /// The source record's integer key, of the system and the id in
    /// another field (declared before it).
    SourceKey {
        id: usize,
    },
    Absent,
}

struct FieldPlan {
    def: FieldDef,
    is_key: bool,
    source: Origin,
    codes: Option<HashMap<String, String>>,
    allowed: Option<Vec<String>>,
}

/// Compiled mapping of one source entity onto its table.
pub(crate) struct Mapper {
    pub(crate) table: TableDef,
    /// Source columns the reader must deliver, in order.
    pub(crate) needed: Vec<String>,
    /// Source columns a file must have (those feeding key and required fields).
    pub(crate) mandatory: Vec<String>,
    /// Source columns feeding the key (all a JSON Lines record must have,
    /// since JSON writers leave out null fields).
    pub(crate) key_columns: Vec<String>,
    plans: Vec<FieldPlan>,
    date_formats: Vec<String>,
    ts_formats: Vec<String>,
    system: String,
    batch_id: String,
    ingested_at: i64,
    today: NaiveDate,
    customer_type_idx: Option<usize>,
    id_type_idx: Option<usize>,
    effective_idx: Option<usize>,
    expiry_idx: Option<usize>,
    birth_idx: Option<usize>,
    cells: Vec<Cell>,
}

impl Mapper {
    pub(crate) fn new(
        catalog: &Catalog,
        system: &str,
        mapping: &EntityMapping,
        batch_id: &str,
        ingested_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<Self, crate::schema::SchemaError> {
        let table = catalog.table(&mapping.table)?.clone();
        let mut needed: Vec<String> = Vec::new();
        let mut mandatory = Vec::new();
        let mut key_columns = Vec::new();
        let mut plans = Vec::new();
        for f in &table.fields {
            let source = if let Some(col) = mapping.columns.get(&f.name) {
                needed.push(col.clone());
                if table.key.contains(&f.name) {
                    key_columns.push(col.clone());
                }
                if table.key.contains(&f.name)
                    || f.required == crate::schema::Required::Always(true)
                {
                    mandatory.push(col.clone());
                }
                Origin::Column(needed.len() - 1)
            } else if f.name == "source_system" {
                Origin::SourceSystem
            } else if f.name == "batch_id" && f.system {
                Origin::BatchId
            } else if f.name == "ingested_at" && f.system {
                Origin::IngestedAt
            } else if let Some(id) = (f.name == crate::schema::SOURCE_KEY)
                .then(|| table.source_key_of().and_then(|id| table.index_of(id)))
                .flatten()
            {
                Origin::SourceKey { id }
            } else if let Some(p) = table.partition.as_ref().filter(|p| p.column == f.name) {
                Origin::Partition {
                    from: table.index_of(&p.from).unwrap_or(0),
                    format: p.granularity.format(),
                }
            } else {
                Origin::Absent
            };
            plans.push(FieldPlan {
                is_key: table.key.contains(&f.name),
                def: f.clone(),
                source,
                codes: mapping
                    .codes
                    .get(&f.name)
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
                allowed: f.codes.as_ref().and_then(|c| catalog.codes.get(c).cloned()),
            });
        }
        let n = plans.len();
        Ok(Self {
            customer_type_idx: table.index_of("customer_type"),
            effective_idx: table.index_of("effective_date"),
            expiry_idx: table.index_of("expiry_date"),
            birth_idx: table.index_of("birth_date"),
            id_type_idx: table.index_of("id_type"),
            table,
            needed,
            mandatory,
            key_columns,
            plans,
            date_formats: mapping.date_formats.clone(),
            ts_formats: mapping.timestamp_formats.clone(),
            system: system.to_string(),
            batch_id: batch_id.to_string(),
            ingested_at: ingested_at.timestamp_micros(),
            today: ingested_at.date_naive(),
            cells: vec![Cell::Null; n],
        })
    }

    /// Map, normalise and validate one row. On success the typed cells are
    /// in `self.cells()`; otherwise every reason is returned.
    pub(crate) fn apply(&mut self, values: &[Option<String>]) -> Result<(), Vec<Issue>> {
        let mut issues = Vec::new();
        for i in 0..self.plans.len() {
            let cell = match &self.plans[i].source {
                Origin::Column(c) => match values[*c].as_deref() {
                    None => Cell::Null,
                    // A key with NUL, line breaks or other control
                    // characters would be a distinct key that prints like
                    // another.
                    Some(raw) if self.plans[i].is_key && raw.chars().any(char::is_control) => {
                        issues.push(Issue {
                            code: Reason::InvalidKey,
                            field: self.plans[i].def.name.clone(),
                            value: Some(raw.escape_debug().to_string()),
                            detail:
                                "a key must not hold control characters (NUL, tab, line breaks)"
                                    .into(),
                        });
                        Cell::Null
                    }
                    Some(raw) => match self.convert(i, raw) {
                        Ok(cell) => cell,
                        Err(e) => {
                            issues.push(Issue {
                                code: e.code,
                                field: self.plans[i].def.name.clone(),
                                value: Some(raw.to_string()),
                                detail: e.detail,
                            });
                            Cell::Null
                        }
                    },
                },
                Origin::SourceSystem => Cell::Str(self.system.clone()),
                Origin::BatchId => Cell::Str(self.batch_id.clone()),
                Origin::IngestedAt => Cell::Ts(self.ingested_at),
                Origin::Partition { from, format } => partition_value(&self.cells[*from], format),
                Origin::SourceKey { id } => match &self.cells[*id] {
                    Cell::Str(id) => Cell::I64(crate::domain::source_key(&self.system, id)),
                    _ => Cell::Null,
                },
                Origin::Absent => Cell::Null,
            };
            self.cells[i] = cell;
        }
        // Required fields (per customer type) must be filled.
        let ctype = self.cell_str(self.customer_type_idx);
        for (i, p) in self.plans.iter().enumerate() {
            if p.def.system || !matches!(self.cells[i], Cell::Null) {
                continue;
            }
            let required = p.is_key || p.def.required.applies(ctype);
            let already = issues.iter().any(|x| x.field == p.def.name);
            if required && !already {
                issues.push(Issue {
                    code: Reason::MissingRequired,
                    field: p.def.name.clone(),
                    value: None,
                    detail: match &ctype {
                        Some(t) => format!("{} is required for {t} customers", p.def.name),
                        None => format!("{} is required", p.def.name),
                    },
                });
            }
        }
        self.cross_checks(&mut issues);
        if issues.is_empty() {
            Ok(())
        } else {
            Err(issues)
        }
    }

    fn cross_checks(&self, issues: &mut Vec<Issue>) {
        // Cover must end after it starts.
        if let (Some(a), Some(b)) = (self.effective_idx, self.expiry_idx)
            && let (Cell::Date(s), Cell::Date(e)) = (&self.cells[a], &self.cells[b])
            && e < s
        {
            issues.push(Issue {
                code: Reason::InvalidDateRange,
                field: "expiry_date".into(),
                value: None,
                detail: "expiry_date is before effective_date".into(),
            });
        }
        // A birth date may not be in the future.
        if let Some(b) = self.birth_idx
            && let Cell::Date(d) = self.cells[b]
            && d > days_since_epoch(self.today)
        {
            issues.push(Issue {
                code: Reason::InvalidDate,
                field: "birth_date".into(),
                value: None,
                detail: "birth_date is in the future".into(),
            });
        }
    }

    pub(crate) fn cells(&self) -> &[Cell] {
        &self.cells
    }

    fn convert(&self, i: usize, raw: &str) -> Result<Cell, DomainError> {
        let p = &self.plans[i];
        let mut text: String = match p.def.normalizer {
            Normalizer::None => raw.to_string(),
            Normalizer::Trim => raw.trim().to_string(),
            Normalizer::Upper => raw.trim().to_uppercase(),
            Normalizer::Lower => raw.trim().to_lowercase(),
            Normalizer::Fold => fold_whitespace(raw),
        };
        if let Some(map) = &p.codes {
            text = map.get(text.trim()).cloned().ok_or_else(|| {
                DomainError::new(
                    Reason::UnmappedCode,
                    format!(
                        "{:?} has no mapping for {} in source {}",
                        text, p.def.name, self.system
                    ),
                )
            })?;
        }
        if text.is_empty() {
            return Ok(Cell::Null);
        }
        let cell = match p.def.ty {
            FieldType::String => Cell::Str(self.validate(i, text)?),
            FieldType::Date => Cell::Date(days_since_epoch(parse_date(&text, &self.date_formats)?)),
            FieldType::Timestamp => Cell::Ts(self.parse_timestamp(&text)?),
            FieldType::Money => {
                let cents = parse_money(&text)?;
                if p.def.validator == Validator::NonNegative && cents < 0 {
                    return Err(DomainError::new(
                        Reason::InvalidNumber,
                        format!("{text} is negative"),
                    ));
                }
                Cell::Money(cents)
            }
            FieldType::Int64 => {
                let n: i64 = text.parse().map_err(|_| {
                    DomainError::new(Reason::InvalidNumber, format!("{text:?} is not an integer"))
                })?;
                if p.def.validator == Validator::NonNegative && n < 0 {
                    return Err(DomainError::new(
                        Reason::InvalidNumber,
                        format!("{text} is negative"),
                    ));
                }
                Cell::I64(n)
            }
            FieldType::Float64 => Cell::F64(text.parse().map_err(|_| {
                DomainError::new(Reason::InvalidNumber, format!("{text:?} is not a number"))
            })?),
            FieldType::Bool => Cell::Bool(match text.to_ascii_lowercase().as_str() {
                "true" | "1" | "y" | "yes" | "是" => true,
                "false" | "0" | "n" | "no" | "否" => false,
                _ => {
                    return Err(DomainError::new(
                        Reason::InvalidBool,
                        format!("{text:?} is not yes/no"),
                    ));
                }
            }),
        };
        Ok(cell)
    }

    fn validate(&self, i: usize, text: String) -> Result<String, DomainError> {
        let p = &self.plans[i];
        match p.def.validator {
            Validator::None | Validator::NonNegative => Ok(text),
            Validator::Code => {
                let allowed = p.allowed.as_deref().unwrap_or_default();
                if !allowed.contains(&text) {
                    return Err(DomainError::new(
                        Reason::UnmappedCode,
                        format!(
                            "{text:?} is not a standard {} code ({})",
                            p.def.name,
                            allowed.join(", ")
                        ),
                    ));
                }
                Ok(text)
            }
            v => {
                let context = match v {
                    Validator::CustomerName => self.cell_str(self.customer_type_idx),
                    Validator::IdNumber => self.cell_str(self.id_type_idx),
                    _ => None,
                };
                v.canonical(&text, context, self.today)
            }
        }
    }

    fn cell_str(&self, idx: Option<usize>) -> Option<&str> {
        match idx.map(|i| &self.cells[i]) {
            Some(Cell::Str(s)) => Some(s.as_str()),
            _ => None,
        }
    }

    fn parse_timestamp(&self, text: &str) -> Result<i64, DomainError> {
        let t = text.trim();
        if let Ok(dt) = chrono::DateTime::parse_from_rfc3339(t) {
            return Ok(dt.timestamp_micros());
        }
        for f in &self.ts_formats {
            if let Some((d, h, m, s)) = parse_fixed(t, f) {
                return local_micros(d.and_hms_opt(h, m, s).unwrap_or_default());
            }
        }
        for f in &self.ts_formats {
            if let Ok(naive) = NaiveDateTime::parse_from_str(t, f) {
                return local_micros(naive);
            }
        }
        // A bare date is midnight local time.
        if let Ok(d) = parse_date(t, &self.date_formats) {
            return local_micros(d.and_hms_opt(0, 0, 0).unwrap_or_default());
        }
        Err(DomainError::new(
            Reason::InvalidTimestamp,
            format!(
                "{t:?} is not a timestamp in any of the formats {}",
                self.ts_formats.join(", ")
            ),
        ))
    }
}

fn local_micros(naive: NaiveDateTime) -> Result<i64, DomainError> {
    beijing()
        .from_local_datetime(&naive)
        .single()
        .map(|dt| dt.timestamp_micros())
        .ok_or_else(|| {
            DomainError::new(
                Reason::InvalidTimestamp,
                format!("{naive} is not a valid local time"),
            )
        })
}

fn partition_value(cell: &Cell, format: &str) -> Cell {
    let date = match cell {
        Cell::Date(d) => date_from_days(*d),
        Cell::Ts(us) => chrono::DateTime::from_timestamp_micros(*us)
            .map(|t| t.with_timezone(&beijing()).date_naive()),
        _ => None,
    };
    date.map_or(Cell::Null, |d| {
        Cell::Str(if format == "%Y-%m" {
            format!("{:04}-{:02}", d.year(), d.month())
        } else {
            format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day())
        })
    })
}

/// Parse an amount into cents: digits, optional sign, at most two decimals,
/// thousands separators and a currency sign tolerated.
pub(crate) fn parse_money(text: &str) -> Result<i128, DomainError> {
    let bad = || DomainError::new(Reason::InvalidNumber, format!("{text:?} is not an amount"));
    let t: String = text
        .trim()
        .trim_start_matches(['¥', '￥'])
        .chars()
        .filter(|c| *c != ',')
        .collect();
    let (neg, t) = match t.strip_prefix('-') {
        Some(r) => (true, r.to_string()),
        None => (false, t),
    };
    let (int, frac) = t.split_once('.').unwrap_or((&t, ""));
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || int.len() > 16
    {
        return Err(bad());
    }
    // Round half up beyond two decimals.
    let mut frac2: String = frac.chars().take(2).collect();
    while frac2.len() < 2 {
        frac2.push('0');
    }
    let mut cents: i128 =
        int.parse::<i128>().map_err(|_| bad())? * 100 + frac2.parse::<i128>().map_err(|_| bad())?;
    if frac.len() > 2 && frac.as_bytes()[2] >= b'5' {
        cents += 1;
    }
    Ok(if neg { -cents } else { cents })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_parses_to_cents() {
        assert_eq!(parse_money("1,234.5").unwrap(), 123450);
        assert_eq!(parse_money("¥88").unwrap(), 8800);
        assert_eq!(parse_money("-0.015").unwrap(), -2);
        assert_eq!(parse_money("12.345").unwrap(), 1235);
        assert!(parse_money("12a").is_err());
        assert!(parse_money("").is_err());
        assert!(parse_money(".5").is_err());
    }
}
