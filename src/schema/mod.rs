//! Table declarations (`schemas/*.toml`) and source-system mappings
//! (`schemas/sources/*.toml`), embedded in the binary and turned into Arrow
//! schemas and per-field rules. The same declarations drive ingest
//! validation, masking and the documentation `custlake schema` prints.

mod source;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::Deserialize;

pub use source::{EntityMapping, FileFormat, SourceSystem, TextEncoding};

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("schema file {file}: {source}")]
    Parse {
        file: String,
        #[source]
        source: toml::de::Error,
    },
    #[error("schema file {file}: {message}")]
    Invalid { file: String, message: String },
    #[error("no table named {0:?} (see `custlake schema` for the list)")]
    UnknownTable(String),
    #[error("no source system named {0:?} (known: {1})")]
    UnknownSource(String, String),
    #[error("source {system:?} has no entity {entity:?} (it has: {known})")]
    UnknownEntity {
        system: String,
        entity: String,
        known: String,
    },
}

/// The embedded declarations, one `(file name, text)` per table.
const TABLE_FILES: &[(&str, &str)] = &[
    (
        "source_customer.toml",
        include_str!("../../schemas/source_customer.toml"),
    ),
    ("customer.toml", include_str!("../../schemas/customer.toml")),
    (
        "customer_xref.toml",
        include_str!("../../schemas/customer_xref.toml"),
    ),
    (
        "merge_event.toml",
        include_str!("../../schemas/merge_event.toml"),
    ),
    (
        "suspect_group.toml",
        include_str!("../../schemas/suspect_group.toml"),
    ),
    ("policy.toml", include_str!("../../schemas/policy.toml")),
    ("claim.toml", include_str!("../../schemas/claim.toml")),
    ("payment.toml", include_str!("../../schemas/payment.toml")),
    (
        "interaction.toml",
        include_str!("../../schemas/interaction.toml"),
    ),
    ("consent.toml", include_str!("../../schemas/consent.toml")),
    (
        "customer_score.toml",
        include_str!("../../schemas/customer_score.toml"),
    ),
    (
        "quality_metric.toml",
        include_str!("../../schemas/quality_metric.toml"),
    ),
    (
        "quality_issue.toml",
        include_str!("../../schemas/quality_issue.toml"),
    ),
    (
        "ingest_batch.toml",
        include_str!("../../schemas/ingest_batch.toml"),
    ),
    (
        "quarantine.toml",
        include_str!("../../schemas/quarantine.toml"),
    ),
    (
        "audit_log.toml",
        include_str!("../../schemas/audit_log.toml"),
    ),
];

const CODES_FILE: &str = include_str!("../../schemas/codes.toml");

const SOURCE_FILES: &[(&str, &str)] = &[
    ("core.toml", include_str!("../../schemas/sources/core.toml")),
    (
        "claims.toml",
        include_str!("../../schemas/sources/claims.toml"),
    ),
    (
        "telesales.toml",
        include_str!("../../schemas/sources/telesales.toml"),
    ),
    (
        "finance.toml",
        include_str!("../../schemas/sources/finance.toml"),
    ),
];

/// Column types a table may declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    String,
    Int64,
    Float64,
    /// Money: DECIMAL(18,2).
    Money,
    Date,
    Timestamp,
    Bool,
}

impl FieldType {
    pub fn arrow(self) -> DataType {
        match self {
            Self::String => DataType::Utf8,
            Self::Int64 => DataType::Int64,
            Self::Float64 => DataType::Float64,
            Self::Money => DataType::Decimal128(18, 2),
            Self::Date => DataType::Date32,
            Self::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Self::Bool => DataType::Boolean,
        }
    }
}

impl<'de> Deserialize<'de> for FieldType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "string" => Self::String,
            "int64" => Self::Int64,
            "float64" => Self::Float64,
            "money" | "decimal(18,2)" => Self::Money,
            "date" => Self::Date,
            "timestamp" => Self::Timestamp,
            "bool" => Self::Bool,
            other => {
                return Err(serde::de::Error::custom(format!(
                    "unknown type {other:?}: use string, int64, float64, money, date, timestamp or bool"
                )));
            }
        })
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::String => "string",
            Self::Int64 => "int64",
            Self::Float64 => "float64",
            Self::Money => "money",
            Self::Date => "date",
            Self::Timestamp => "timestamp",
            Self::Bool => "bool",
        })
    }
}

/// Sensitivity level, L1 public … L4 secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub enum Level {
    L1,
    L2,
    L3,
    L4,
}

/// Whether a field must be filled: always, never, or for some customer types.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Required {
    Always(bool),
    ForTypes(Vec<String>),
}

impl Required {
    /// Is the field required for a record of this customer type (`None` for
    /// tables without customer types)?
    pub fn applies(&self, customer_type: Option<&str>) -> bool {
        match self {
            Self::Always(b) => *b,
            Self::ForTypes(types) => customer_type.is_some_and(|t| types.iter().any(|x| x == t)),
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Always(true) => "yes".into(),
            Self::Always(false) => "no".into(),
            Self::ForTypes(t) => t.join("+"),
        }
    }
}

/// How a value is cleaned before it is validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Normalizer {
    #[default]
    Trim,
    None,
    Upper,
    Lower,
    /// Trim and fold whitespace runs to one space.
    Fold,
}

/// Which domain rule a value must pass (and which canonical form it takes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Validator {
    #[default]
    None,
    ResidentId,
    Uscc,
    Phone,
    Email,
    TaxId,
    PersonName,
    CompanyName,
    /// A person name or a company name, by the row's `customer_type`.
    CustomerName,
    Address,
    /// A resident id, USCC or passport number, by the row's `id_type`.
    IdNumber,
    /// One of the standard codes in the field's `codes` set.
    Code,
    NonNegative,
}

/// How a field is shown to a role that may not see it in clear.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Mask {
    #[default]
    None,
    /// Keep the first `head` and last `tail` characters, star the rest.
    Keep {
        head: usize,
        tail: usize,
    },
    Redact,
    Hash,
    YearOnly,
}

impl<'de> Deserialize<'de> for Mask {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Mask::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Mask {
    fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        Ok(match s {
            "none" => Self::None,
            "redact" => Self::Redact,
            "hash" => Self::Hash,
            "year_only" => Self::YearOnly,
            _ => {
                let inner = s
                    .strip_prefix("keep(")
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(|| {
                        format!(
                            "unknown mask {s:?}: use none, keep(H,T), redact, hash or year_only"
                        )
                    })?;
                let (h, t) = inner
                    .split_once(',')
                    .ok_or_else(|| format!("mask {s:?}: keep needs two numbers"))?;
                let parse = |x: &str| {
                    x.trim()
                        .parse::<usize>()
                        .map_err(|_| format!("mask {s:?}: {x:?} is not a number"))
                };
                Self::Keep {
                    head: parse(h)?,
                    tail: parse(t)?,
                }
            }
        })
    }
}

impl fmt::Display for Mask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("none"),
            Self::Keep { head, tail } => write!(f, "keep({head},{tail})"),
            Self::Redact => f.write_str("redact"),
            Self::Hash => f.write_str("hash"),
            Self::YearOnly => f.write_str("year_only"),
        }
    }
}

/// Keep the first `head` and last `tail` characters of `s`, replacing the
/// rest with `*` (all of it when `s` is too short to keep both).
pub fn mask_keep(s: &str, head: usize, tail: usize) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() <= head + tail {
        return "*".repeat(chars.len());
    }
    let mut out = String::with_capacity(s.len());
    out.extend(&chars[..head]);
    out.extend(std::iter::repeat_n('*', chars.len() - head - tail));
    out.extend(&chars[chars.len() - tail..]);
    out
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldDef {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: FieldType,
    #[serde(default = "not_required")]
    pub required: Required,
    pub level: Level,
    #[serde(default)]
    pub normalizer: Normalizer,
    #[serde(default)]
    pub validator: Validator,
    #[serde(default)]
    pub mask: Mask,
    /// The standard code set (in `schemas/codes.toml`) for `validator = "code"`.
    #[serde(default)]
    pub codes: Option<String>,
    /// Filled by the warehouse (batch id, load time, partition), not by sources.
    #[serde(default)]
    pub system: bool,
    #[serde(default)]
    pub description: String,
}

fn not_required() -> Required {
    Required::Always(false)
}

/// A month partition derived from a date or timestamp column, as `YYYY-MM`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionDef {
    pub column: String,
    pub from: String,
    /// `month` (`YYYY-MM`, the default) or `day` (`YYYY-MM-DD`).
    #[serde(default)]
    pub granularity: Granularity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    #[default]
    Month,
    Day,
}

impl Granularity {
    /// The chrono format of a partition value.
    pub fn format(self) -> &'static str {
        match self {
            Self::Month => "%Y-%m",
            Self::Day => "%Y-%m-%d",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableDef {
    pub name: String,
    pub description: String,
    pub grain: String,
    pub key: Vec<String>,
    #[serde(default)]
    pub partition: Option<PartitionDef>,
    #[serde(default)]
    pub tiered: bool,
    #[serde(rename = "field")]
    pub fields: Vec<FieldDef>,
}

impl TableDef {
    pub fn field(&self, name: &str) -> Option<&FieldDef> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Does nearly every row hold a different value (so that dictionary
    /// encoding does not pay)?
    pub fn is_high_cardinality(&self, f: &FieldDef) -> bool {
        const FREE_TEXT: [&str; 9] = [
            "source_customer_id",
            "policy_no",
            "renewal_of",
            "bank_account",
            "summary",
            "raw",
            "detail",
            "value",
            "reasons",
        ];
        f.ty == FieldType::String
            && (self.key.contains(&f.name)
                || FREE_TEXT.contains(&f.name.as_str())
                || matches!(
                    f.validator,
                    Validator::ResidentId
                        | Validator::Uscc
                        | Validator::Phone
                        | Validator::Email
                        | Validator::TaxId
                        | Validator::PersonName
                        | Validator::CompanyName
                        | Validator::CustomerName
                        | Validator::Address
                        | Validator::IdNumber
                ))
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }

    /// The Arrow schema of the stored table. Key columns are non-nullable.
    pub fn arrow_schema(&self) -> SchemaRef {
        let fields: Vec<Field> = self
            .fields
            .iter()
            .map(|f| Field::new(&f.name, f.ty.arrow(), !self.key.contains(&f.name)))
            .collect();
        Arc::new(Schema::new(fields))
    }

    fn check(&self, file: &str, codes: &BTreeMap<String, Vec<String>>) -> Result<(), SchemaError> {
        let invalid = |message: String| SchemaError::Invalid {
            file: file.to_string(),
            message,
        };
        let mut seen = std::collections::HashSet::new();
        for f in &self.fields {
            if !seen.insert(f.name.as_str()) {
                return Err(invalid(format!("field {:?} is declared twice", f.name)));
            }
            if f.validator == Validator::Code {
                let set = f.codes.as_deref().ok_or_else(|| {
                    invalid(format!(
                        "field {:?} has validator code but no codes set",
                        f.name
                    ))
                })?;
                if !codes.contains_key(set) {
                    return Err(invalid(format!(
                        "field {:?}: unknown code set {set:?}",
                        f.name
                    )));
                }
            }
        }
        for k in &self.key {
            if self.field(k).is_none() {
                return Err(invalid(format!("key column {k:?} is not a field")));
            }
        }
        if let Some(p) = &self.partition
            && (self.field(&p.column).is_none() || self.field(&p.from).is_none())
        {
            return Err(invalid(format!(
                "partition column {:?} or its source {:?} is not a field",
                p.column, p.from
            )));
        }
        Ok(())
    }
}

/// Every table, code set and source mapping the warehouse knows.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub tables: Vec<TableDef>,
    pub codes: BTreeMap<String, Vec<String>>,
    pub sources: Vec<SourceSystem>,
}

impl Catalog {
    /// The declarations compiled into this binary.
    pub fn embedded() -> Result<Self, SchemaError> {
        let codes: BTreeMap<String, Vec<String>> =
            toml::from_str(CODES_FILE).map_err(|source| SchemaError::Parse {
                file: "codes.toml".into(),
                source,
            })?;
        let mut tables = Vec::new();
        for (file, text) in TABLE_FILES {
            let t: TableDef = toml::from_str(text).map_err(|source| SchemaError::Parse {
                file: (*file).into(),
                source,
            })?;
            t.check(file, &codes)?;
            tables.push(t);
        }
        let mut sources = Vec::new();
        for (file, text) in SOURCE_FILES {
            let s: SourceSystem = toml::from_str(text).map_err(|source| SchemaError::Parse {
                file: format!("sources/{file}"),
                source,
            })?;
            sources.push(s);
        }
        let catalog = Self {
            tables,
            codes,
            sources,
        };
        for s in &catalog.sources {
            s.check(&catalog)?;
        }
        Ok(catalog)
    }

    pub fn table(&self, name: &str) -> Result<&TableDef, SchemaError> {
        self.tables
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| SchemaError::UnknownTable(name.to_string()))
    }

    pub fn source(&self, system: &str) -> Result<&SourceSystem, SchemaError> {
        self.sources
            .iter()
            .find(|s| s.system == system)
            .ok_or_else(|| {
                SchemaError::UnknownSource(
                    system.to_string(),
                    self.sources
                        .iter()
                        .map(|s| s.system.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                )
            })
    }

    pub fn entity(&self, system: &str, entity: &str) -> Result<&EntityMapping, SchemaError> {
        let s = self.source(system)?;
        s.entities
            .iter()
            .find(|e| e.name == entity)
            .ok_or_else(|| SchemaError::UnknownEntity {
                system: system.to_string(),
                entity: entity.to_string(),
                known: s
                    .entities
                    .iter()
                    .map(|e| e.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// A table's declaration as readable text (for `custlake schema TABLE`).
    pub fn describe_table(&self, t: &TableDef) -> String {
        let mut out = format!("{} — {}\n", t.name, t.description);
        out.push_str(&format!(
            "  grain: {}\n  key: ({})\n",
            t.grain,
            t.key.join(", ")
        ));
        if let Some(p) = &t.partition {
            out.push_str(&format!(
                "  partitioned by: {} (month of {})\n",
                p.column, p.from
            ));
        }
        out.push_str(&format!(
            "  tiered: {}\n",
            if t.tiered {
                "yes (hot/warm/cold)"
            } else {
                "no"
            }
        ));
        let mut table = comfy_table::Table::new();
        table.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
        table.set_header([
            "field",
            "type",
            "required",
            "level",
            "normaliser",
            "validator",
            "mask",
            "description",
        ]);
        for f in &t.fields {
            let validator = match (&f.validator, &f.codes) {
                (Validator::Code, Some(set)) => {
                    format!("code: {set} ({})", self.codes[set].join("|"))
                }
                (v, _) => format!("{v:?}").to_lowercase(),
            };
            table.add_row([
                f.name.clone(),
                f.ty.to_string(),
                if f.system {
                    "system".into()
                } else {
                    f.required.describe()
                },
                format!("{:?}", f.level),
                format!("{:?}", f.normalizer).to_lowercase(),
                validator,
                f.mask.to_string(),
                f.description.clone(),
            ]);
        }
        out.push_str(&table.to_string());
        out.push('\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_of_the_design_is_declared_and_valid() {
        let c = Catalog::embedded().unwrap();
        for (name, key) in [
            ("source_customer", vec!["source_system", "source_id"]),
            ("customer", vec!["customer_id"]),
            ("customer_xref", vec!["source_system", "source_id"]),
            ("merge_event", vec!["event_id"]),
            ("policy", vec!["policy_no"]),
            ("claim", vec!["claim_no"]),
            ("payment", vec!["payment_id"]),
            ("interaction", vec!["event_id"]),
            ("consent", vec!["consent_id"]),
            ("ingest_batch", vec!["batch_id"]),
            ("quarantine", vec!["batch_id", "line"]),
        ] {
            assert_eq!(c.table(name).unwrap().key, key, "{name}");
        }
        assert_eq!(c.tables.len(), 16);
        for t in &c.tables {
            assert!(!t.arrow_schema().fields().is_empty());
        }
        assert!(c.table("policy").unwrap().tiered);
        assert!(!c.table("source_customer").unwrap().tiered);
    }

    #[test]
    fn masks_parse_and_apply() {
        assert_eq!(
            Mask::parse("keep(3,4)").unwrap(),
            Mask::Keep { head: 3, tail: 4 }
        );
        assert!(Mask::parse("keep(3)").is_err());
        assert_eq!(mask_keep("+8613812345678", 3, 4), "+86*******5678");
        assert_eq!(mask_keep("110105194912310021", 3, 4), "110***********0021");
        assert_eq!(mask_keep("abc", 3, 4), "***");
        assert_eq!(mask_keep("张三丰先生", 1, 1), "张***生");
    }

    #[test]
    fn required_per_customer_type() {
        let r = Required::ForTypes(vec!["individual".into()]);
        assert!(r.applies(Some("individual")));
        assert!(!r.applies(Some("corporate")));
        assert!(!r.applies(None));
    }
}
