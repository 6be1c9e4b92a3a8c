//! Table declarations (`schemas/*.toml`) and source-system mappings
//! (`schemas/sources/*.toml`), embedded in the binary and turned into Arrow
//! schemas and per-field rules. The same declarations drive ingest
//! validation, masking and the documentation `custlake schema` prints.

mod field;
pub mod row;
pub mod rules;
mod source;
mod table;

use std::collections::BTreeMap;

pub use field::{FieldDef, FieldType, Level, Mask, Normalizer, Required, Validator, mask_keep};
pub use source::{EntityMapping, FileFormat, SourceSystem, TextEncoding};
pub use table::{Granularity, PartitionDef, SOURCE_KEY, TableDef};

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

impl crate::error::Classify for SchemaError {
    fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            // The declarations are compiled in: a bad one is a defect.
            Self::Parse { .. } | Self::Invalid { .. } => ErrorKind::Internal,
            Self::UnknownTable(_) => ErrorKind::NotFound,
            Self::UnknownSource(..) | Self::UnknownEntity { .. } => ErrorKind::InvalidParameter,
        }
    }
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
        "report_row.toml",
        include_str!("../../schemas/report_row.toml"),
    ),
    ("job_run.toml", include_str!("../../schemas/job_run.toml")),
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
    ("agent.toml", include_str!("../../schemas/agent.toml")),
    (
        "business_registry.toml",
        include_str!("../../schemas/business_registry.toml"),
    ),
    (
        "lifecycle_event.toml",
        include_str!("../../schemas/lifecycle_event.toml"),
    ),
    ("list_run.toml", include_str!("../../schemas/list_run.toml")),
    (
        "list_line.toml",
        include_str!("../../schemas/list_line.toml"),
    ),
    (
        "code_list.toml",
        include_str!("../../schemas/code_list.toml"),
    ),
];

/// Tables built from the declarations when a session starts, never stored.
pub const BUILT_TABLES: [&str; 1] = ["code_list"];

const CODES_FILE: &str = include_str!("../../schemas/codes.toml");
const LABELS_FILE: &str = include_str!("../../schemas/code_labels.toml");

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
    (
        "registry.toml",
        include_str!("../../schemas/sources/registry.toml"),
    ),
];

/// Every table, code set and source mapping the warehouse knows.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub tables: Vec<TableDef>,
    pub codes: BTreeMap<String, Vec<String>>,
    /// Each code's labels, Chinese then English (`code_labels.toml`).
    pub labels: BTreeMap<String, BTreeMap<String, (String, String)>>,
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
        let labels: BTreeMap<String, BTreeMap<String, (String, String)>> =
            toml::from_str(LABELS_FILE).map_err(|source| SchemaError::Parse {
                file: "code_labels.toml".into(),
                source,
            })?;
        for (set, codes) in &codes {
            for code in codes {
                if !labels.get(set).is_some_and(|l| l.contains_key(code)) {
                    return Err(SchemaError::Invalid {
                        file: "code_labels.toml".into(),
                        message: format!("code {set}.{code} has no label"),
                    });
                }
            }
        }
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
            labels,
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
            ("agent", vec!["agent_id"]),
            ("business_registry", vec!["uscc"]),
            ("customer_score", vec!["customer_id", "as_of"]),
            ("list_run", vec!["run_id"]),
            ("list_line", vec!["run_id", "line"]),
            ("lifecycle_event", vec!["event_id"]),
            ("code_list", vec!["code_set", "code"]),
            ("report_row", vec!["period", "report", "seq"]),
            ("job_run", vec!["run_id"]),
        ] {
            assert_eq!(c.table(name).unwrap().key, key, "{name}");
        }
        assert_eq!(c.tables.len(), 24);
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
