//! Table declarations: key, partitioning, tiering and fields, and the Arrow
//! schema they give.

use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use serde::Deserialize;

use std::collections::BTreeMap;

use super::{FieldDef, FieldType, SchemaError, Validator};

/// A month partition derived from a date or timestamp column, as `YYYY-MM`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionDef {
    pub column: String,
    pub from: String,
    /// `month` (`YYYY-MM`, the default) or `day` (`YYYY-MM-DD`).
    #[serde(default)]
    pub granularity: Granularity,
    /// Each write fills one partition (a run's date, as customer_score's
    /// as-of): the writer holds one open file, so the table's row groups
    /// are as large as an unpartitioned table's rather than sized for a
    /// load spread over many months' files.
    #[serde(default)]
    pub one_per_write: bool,
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

/// The integer key of a source record, in every table that names one (see
/// [`TableDef::source_key_of`]).
pub const SOURCE_KEY: &str = "source_key";

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
    /// Columns looked up one value at a time (an id, a phone number): their
    /// Parquet files carry a bloom filter per row group, so a lookup reads
    /// only the row groups that may hold the value.
    #[serde(default)]
    pub lookup: Vec<String>,
    /// The order `tier apply` writes a compacted partition's rows in: what
    /// the table's reads select by, so that each row group's statistics
    /// skip the others (default: the key).
    #[serde(default)]
    pub cluster: Vec<String>,
    #[serde(rename = "field")]
    pub fields: Vec<FieldDef>,
}

impl TableDef {
    pub fn field(&self, name: &str) -> Option<&FieldDef> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The columns a compacted partition's rows are sorted by: `cluster`,
    /// or the key.
    pub fn cluster_order(&self) -> &[String] {
        if self.cluster.is_empty() {
            &self.key
        } else {
            &self.cluster
        }
    }

    /// Does nearly every row hold a different value (so that dictionary
    /// encoding does not pay)? Keys, lookup columns, free text, personal
    /// identifiers (by their validator, or by their mask where a golden
    /// field has no validator), per-record digests and the integer key of
    /// a source record. Such a column
    /// written with a dictionary puts nearly all of a row group's values in
    /// its dictionary page, which a reader decompresses and decodes whole
    /// to return one row.
    pub fn is_high_cardinality(&self, f: &FieldDef) -> bool {
        const FREE_TEXT: [&str; 11] = [
            "source_customer_id",
            "policy_no",
            "renewal_of",
            "bank_account",
            "summary",
            "raw",
            "detail",
            "value",
            "reasons",
            "survivorship",
            "fingerprint",
        ];
        f.name == SOURCE_KEY
            || f.ty == FieldType::String
                && (self.key.contains(&f.name)
                    || self.lookup.contains(&f.name)
                    || FREE_TEXT.contains(&f.name.as_str())
                    || matches!(f.mask, super::Mask::Keep { .. } | super::Mask::Hash)
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

    /// The id field the table's `source_key` hashes with `source_system`
    /// ([`crate::domain::source_key`]): `source_customer_id` in a fact,
    /// `source_id` in the source records and their links. `None` for a
    /// table without a `source_key`.
    pub fn source_key_of(&self) -> Option<&str> {
        self.field(SOURCE_KEY)?;
        ["source_customer_id", "source_id"]
            .into_iter()
            .find(|f| self.field(f).is_some())
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

    pub(super) fn check(
        &self,
        file: &str,
        codes: &BTreeMap<String, Vec<String>>,
    ) -> Result<(), SchemaError> {
        let invalid = |message: String| SchemaError::Invalid {
            file: file.to_string(),
            message,
        };
        if let Some(f) = self.field(SOURCE_KEY) {
            if f.ty != FieldType::Int64 || !f.system {
                return Err(invalid(format!(
                    "field {SOURCE_KEY:?} is the integer key of a source record: type int64, system = true"
                )));
            }
            if self.source_key_of().is_none() || self.field("source_system").is_none() {
                return Err(invalid(format!(
                    "field {SOURCE_KEY:?} hashes source_system with source_customer_id or source_id, which the table lacks"
                )));
            }
        }
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
        for k in &self.lookup {
            if self.field(k).is_none() {
                return Err(invalid(format!("lookup column {k:?} is not a field")));
            }
        }
        for k in &self.cluster {
            if self.field(k).is_none() {
                return Err(invalid(format!("cluster column {k:?} is not a field")));
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
