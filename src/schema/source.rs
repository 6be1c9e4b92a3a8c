//! Source-system mappings: which file an extract is, in which format and
//! encoding, which source column feeds which warehouse field, and how the
//! source's codes translate to the standard ones.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Catalog, SchemaError, Validator};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    Csv,
    Jsonl,
    Parquet,
}

impl FileFormat {
    pub fn extension(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Jsonl => "jsonl",
            Self::Parquet => "parquet",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TextEncoding {
    #[default]
    Utf8,
    Gbk,
}

/// One source system and the extracts it delivers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSystem {
    /// The warehouse's name for the system (`source_system` column).
    pub system: String,
    pub title: String,
    /// Survivorship rank: lower is more trusted.
    pub priority: u32,
    #[serde(rename = "entity")]
    pub entities: Vec<EntityMapping>,
}

/// How one extract of a source maps onto a warehouse table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntityMapping {
    /// `customer`, `policy`, `claim`, `payment`, `interaction` or `consent`.
    pub name: String,
    /// The warehouse table the rows land in.
    pub table: String,
    /// The file name the source delivers (and the generator writes).
    pub file: String,
    pub format: FileFormat,
    #[serde(default)]
    pub encoding: TextEncoding,
    #[serde(default = "comma")]
    pub delimiter: char,
    /// chrono formats for date fields, tried in order.
    pub date_formats: Vec<String>,
    /// chrono formats for timestamp fields, tried in order (source local time, UTC+8).
    #[serde(default)]
    pub timestamp_formats: Vec<String>,
    /// warehouse field → source column.
    pub columns: BTreeMap<String, String>,
    /// warehouse field → source code → standard code.
    #[serde(default)]
    pub codes: BTreeMap<String, BTreeMap<String, String>>,
}

fn comma() -> char {
    ','
}

impl SourceSystem {
    pub(super) fn check(&self, catalog: &Catalog) -> Result<(), SchemaError> {
        let file = format!("sources/{}.toml", self.system);
        let invalid = |message: String| SchemaError::Invalid {
            file: file.clone(),
            message,
        };
        for e in &self.entities {
            let table = catalog.table(&e.table).map_err(|_| {
                invalid(format!(
                    "entity {:?} targets unknown table {:?}",
                    e.name, e.table
                ))
            })?;
            for field in e.columns.keys() {
                let f = table.field(field).ok_or_else(|| {
                    invalid(format!("entity {:?} maps unknown field {field:?}", e.name))
                })?;
                if f.system {
                    return Err(invalid(format!(
                        "entity {:?} maps system field {field:?}",
                        e.name
                    )));
                }
            }
            for (field, map) in &e.codes {
                let f = table.field(field).ok_or_else(|| {
                    invalid(format!(
                        "entity {:?} has codes for unknown field {field:?}",
                        e.name
                    ))
                })?;
                if f.validator == Validator::Code {
                    let set = f.codes.as_deref().unwrap_or_default();
                    let allowed = &catalog.codes[set];
                    if let Some(bad) = map.values().find(|v| !allowed.contains(v)) {
                        return Err(invalid(format!(
                            "entity {:?} maps {field:?} to {bad:?}, which is not in code set {set:?}",
                            e.name
                        )));
                    }
                }
            }
            for k in &table.key {
                if k != "source_system" && !e.columns.contains_key(k) {
                    return Err(invalid(format!(
                        "entity {:?} does not map key column {k:?}",
                        e.name
                    )));
                }
            }
        }
        Ok(())
    }
}
