//! Named queries: `sql/*.sql` files with a header naming the query, its
//! typed parameters (with defaults) and the roles allowed to run it.
//!
//! ```sql
//! -- name: customer_lookup
//! -- description: A source customer record by source system and source id
//! -- param: system string default core
//! -- param: id string
//! -- roles: analyst, steward
//! SELECT ... WHERE source_system = $system AND source_id = $id
//! ```
//!
//! Parameter types: `string`, `int`, `float`, `bool`, `date` (`YYYY-MM-DD`;
//! the default `today` is the current date). After the type, `default
//! VALUE` and, for numbers, `range LO..HI` (both included).

use datafusion::scalar::ScalarValue;

const FILES: &[(&str, &str)] = &[
    (
        "customer_lookup.sql",
        include_str!("../../sql/customer_lookup.sql"),
    ),
    (
        "customer_by_phone.sql",
        include_str!("../../sql/customer_by_phone.sql"),
    ),
    (
        "customer_by_id_number.sql",
        include_str!("../../sql/customer_by_id_number.sql"),
    ),
    (
        "customer_golden.sql",
        include_str!("../../sql/customer_golden.sql"),
    ),
    (
        "policies_expiring.sql",
        include_str!("../../sql/policies_expiring.sql"),
    ),
    (
        "quarantine_summary.sql",
        include_str!("../../sql/quarantine_summary.sql"),
    ),
    (
        "quality_teams.sql",
        include_str!("../../sql/quality_teams.sql"),
    ),
    (
        "quality_work_orders.sql",
        include_str!("../../sql/quality_work_orders.sql"),
    ),
    (
        "customer_count.sql",
        include_str!("../../sql/customer_count.sql"),
    ),
    (
        "audit_exports.sql",
        include_str!("../../sql/audit_exports.sql"),
    ),
    (
        "audit_denials.sql",
        include_str!("../../sql/audit_denials.sql"),
    ),
    (
        "audit_off_hours.sql",
        include_str!("../../sql/audit_off_hours.sql"),
    ),
    (
        "audit_volume.sql",
        include_str!("../../sql/audit_volume.sql"),
    ),
    (
        "segment_counts.sql",
        include_str!("../../sql/segment_counts.sql"),
    ),
    (
        "value_distribution.sql",
        include_str!("../../sql/value_distribution.sql"),
    ),
    (
        "lifecycle_flows.sql",
        include_str!("../../sql/lifecycle_flows.sql"),
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    String,
    Int,
    Float,
    Bool,
    Date,
}

impl ParamType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "string" => Self::String,
            "int" => Self::Int,
            "float" => Self::Float,
            "bool" => Self::Bool,
            "date" => Self::Date,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Int => "int",
            Self::Float => "float",
            Self::Bool => "bool",
            Self::Date => "date",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub ty: ParamType,
    /// The default as written in the header.
    pub default: Option<String>,
    /// The values a number may take (`range LO..HI`, both included).
    pub range: Option<(f64, f64)>,
}

#[derive(Debug, Clone)]
pub struct NamedQuery {
    pub name: String,
    pub description: String,
    pub params: Vec<Param>,
    pub roles: Vec<String>,
    pub sql: String,
}

/// A parameter problem, naming the parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("parameter {name:?}: {message}")]
pub struct ParamError {
    pub name: String,
    pub message: String,
}

impl crate::error::Classify for ParamError {
    fn kind(&self) -> crate::error::ErrorKind {
        crate::error::ErrorKind::InvalidParameter
    }
}

impl NamedQuery {
    /// Parse one file.
    pub fn parse(file: &str, text: &str) -> Result<Self, String> {
        let mut name = None;
        let mut description = String::new();
        let mut params = Vec::new();
        let mut roles = Vec::new();
        let mut body = Vec::new();
        for line in text.lines() {
            let Some(header) = line.trim().strip_prefix("--") else {
                body.push(line);
                continue;
            };
            let Some((key, value)) = header.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match key.trim() {
                "name" => name = Some(value.to_string()),
                "description" => description = value.to_string(),
                "roles" => roles = value.split(',').map(|r| r.trim().to_string()).collect(),
                "param" => {
                    let words: Vec<&str> = value.split_whitespace().collect();
                    let (pname, ty) = match words.as_slice() {
                        [n, t, ..] => (*n, *t),
                        _ => return Err(format!("{file}: `param:` needs a name and a type")),
                    };
                    let ty = ParamType::parse(ty)
                        .ok_or_else(|| format!("{file}: parameter {pname}: unknown type {ty:?}"))?;
                    let (mut default, mut range) = (None, None);
                    let mut rest = words.get(2..).unwrap_or_default().iter().peekable();
                    while let Some(w) = rest.next() {
                        match (*w, rest.next()) {
                            // A default runs to `range` or the end of the line.
                            ("default", Some(v)) => {
                                let mut d = vec![*v];
                                while let Some(more) = rest.next_if(|w| **w != "range") {
                                    d.push(more);
                                }
                                default = Some(d.join(" "));
                            }
                            ("range", Some(r))
                                if matches!(ty, ParamType::Int | ParamType::Float) =>
                            {
                                let bounds = r.split_once("..").and_then(|(lo, hi)| {
                                    Some((lo.parse::<f64>().ok()?, hi.parse::<f64>().ok()?))
                                });
                                range =
                                    Some(bounds.filter(|(lo, hi)| lo <= hi).ok_or_else(|| {
                                        format!(
                                            "{file}: parameter {pname}: expected `range LO..HI`"
                                        )
                                    })?);
                            }
                            _ => {
                                return Err(format!(
                                    "{file}: parameter {pname}: expected `default VALUE` or (for numbers) `range LO..HI`"
                                ));
                            }
                        }
                    }
                    params.push(Param {
                        name: pname.to_string(),
                        ty,
                        default,
                        range,
                    });
                }
                _ => {}
            }
        }
        let name = name.ok_or_else(|| format!("{file}: no `-- name:` header"))?;
        let q = Self {
            name,
            description,
            params,
            roles,
            sql: body.join("\n").trim().to_string(),
        };
        // Defaults must be valid values of their type.
        for p in &q.params {
            if let Some(d) = &p.default {
                convert(p, Input::Text(d)).map_err(|e| format!("{file}: {e}"))?;
            }
        }
        Ok(q)
    }

    /// Every parameter's value from a JSON object (`POST`): given, with
    /// the JSON type of its parameter type, or the default.
    pub fn bind(
        &self,
        given: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Vec<(String, ScalarValue)>, ParamError> {
        self.bind_with(given.keys(), |name| given.get(name).map(Input::Json))
    }

    /// Every parameter's value from text (a query string): given, parsed
    /// as its type, or the default.
    pub fn bind_text(
        &self,
        given: &std::collections::HashMap<String, String>,
    ) -> Result<Vec<(String, ScalarValue)>, ParamError> {
        self.bind_with(given.keys(), |name| {
            given.get(name).map(|v| Input::Text(v.as_str()))
        })
    }

    fn bind_with<'a>(
        &self,
        names: impl Iterator<Item = &'a String>,
        given: impl Fn(&str) -> Option<Input<'a>>,
    ) -> Result<Vec<(String, ScalarValue)>, ParamError> {
        // The first unknown name in order, whatever order they came in.
        let unknown = names
            .filter(|k| !self.params.iter().any(|p| &p.name == *k))
            .min();
        if let Some(unknown) = unknown {
            return Err(ParamError {
                name: unknown.clone(),
                message: format!(
                    "{} takes no such parameter (it takes: {})",
                    self.name,
                    self.params
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        self.params
            .iter()
            .map(|p| {
                let v = match (given(&p.name), &p.default) {
                    (Some(v), _) => convert(p, v),
                    (None, Some(d)) => convert(p, Input::Text(d)),
                    (None, None) => {
                        return Err(ParamError {
                            name: p.name.clone(),
                            message: format!("is required ({})", p.ty.name()),
                        });
                    }
                };
                v.map(|s| (p.name.clone(), s))
            })
            .collect()
    }
}

/// A parameter's value as given: JSON (typed) or text (to parse).
#[derive(Clone, Copy)]
enum Input<'a> {
    Json(&'a serde_json::Value),
    Text(&'a str),
}

fn convert(p: &Param, v: Input<'_>) -> Result<ScalarValue, ParamError> {
    let shown = match v {
        Input::Json(j) => j.to_string(),
        Input::Text(t) => format!("{t:?}"),
    };
    let bad = || ParamError {
        name: p.name.clone(),
        message: format!("{shown} is not a valid {}", p.ty.name()),
    };
    // A JSON value is taken as its text (`"30"` and `30` alike); null,
    // arrays and objects are no parameter's.
    use serde_json::Value as J;
    let text = match v {
        Input::Text(t) => t.trim().to_string(),
        Input::Json(J::String(s)) => s.trim().to_string(),
        Input::Json(J::Number(n)) => n.to_string(),
        Input::Json(J::Bool(b)) => b.to_string(),
        Input::Json(_) => return Err(bad()),
    };
    let in_range = |v: f64| -> Result<(), ParamError> {
        match p.range {
            Some((lo, hi)) if !(lo..=hi).contains(&v) => Err(ParamError {
                name: p.name.clone(),
                message: format!("{v} is outside {lo}..{hi}"),
            }),
            _ => Ok(()),
        }
    };
    Ok(match p.ty {
        ParamType::String => ScalarValue::Utf8(Some(text)),
        ParamType::Int => {
            // JSON Schema's integers include `5.0`.
            let v: i64 = match text.parse() {
                Ok(v) => v,
                Err(_) => text
                    .parse::<f64>()
                    .ok()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9e15)
                    .map(|f| f as i64)
                    .ok_or_else(bad)?,
            };
            in_range(v as f64)?;
            ScalarValue::Int64(Some(v))
        }
        ParamType::Float => {
            let v: f64 = text.parse().map_err(|_| bad())?;
            in_range(v)?;
            ScalarValue::Float64(Some(v))
        }
        ParamType::Bool => ScalarValue::Boolean(Some(text.parse().map_err(|_| bad())?)),
        ParamType::Date => {
            let d = if text == "today" {
                chrono::Utc::now().date_naive()
            } else {
                chrono::NaiveDate::parse_from_str(&text, "%Y-%m-%d").map_err(|_| bad())?
            };
            ScalarValue::Date32(Some(crate::domain::days_since_epoch(d)))
        }
    })
}

/// The named queries shipped in `sql/`.
pub fn embedded() -> Result<Vec<NamedQuery>, String> {
    FILES.iter().map(|(f, t)| NamedQuery::parse(f, t)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_queries_parse_and_bind() {
        let qs = embedded().unwrap();
        // Every file of sql/ is shipped.
        let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/sql"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "sql")
            })
            .count();
        assert_eq!(qs.len(), files);
        assert_eq!(qs.len(), 16);
        let q = qs.iter().find(|q| q.name == "customer_lookup").unwrap();
        assert_eq!(q.params.len(), 2);
        assert!(q.sql.starts_with("SELECT"));
        let mut given = serde_json::Map::new();
        given.insert("id".into(), "C1".into());
        let bound = q.bind(&given).unwrap();
        assert_eq!(
            bound[0],
            ("system".to_string(), ScalarValue::Utf8(Some("core".into())))
        );
        let err = q.bind(&serde_json::Map::new()).unwrap_err();
        assert_eq!(err.name, "id");
        let p = qs.iter().find(|q| q.name == "policies_expiring").unwrap();
        let mut given = serde_json::Map::new();
        given.insert("days".into(), "thirty".into());
        assert_eq!(p.bind(&given).unwrap_err().name, "days");
        given.insert("days".into(), 30.into());
        given.insert("as_of".into(), "2026-02-30".into());
        assert_eq!(p.bind(&given).unwrap_err().name, "as_of");
        given.insert("nope".into(), 1.into());
        assert_eq!(p.bind(&given).unwrap_err().name, "nope");
    }
}
