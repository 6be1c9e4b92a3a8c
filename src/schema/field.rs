//! Field declarations: types, requirement per customer type, sensitivity
//! levels, normalisers, validators and masks.

use std::fmt;

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use serde::Deserialize;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
pub enum Level {
    L1,
    L2,
    L3,
    L4,
}

impl std::str::FromStr for Level {
    type Err = String;
    /// `L1` .. `L4`.
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.trim() {
            "L1" => Self::L1,
            "L2" => Self::L2,
            "L3" => Self::L3,
            "L4" => Self::L4,
            other => return Err(format!("level {other:?}: use L1, L2, L3 or L4")),
        })
    }
}

impl Level {
    pub const ALL: [Level; 4] = [Level::L1, Level::L2, Level::L3, Level::L4];

    /// `L1` .. `L4`, as written in declarations and stored.
    pub fn name(self) -> &'static str {
        match self {
            Self::L1 => "L1",
            Self::L2 => "L2",
            Self::L3 => "L3",
            Self::L4 => "L4",
        }
    }
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

    pub(super) fn describe(&self) -> String {
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

impl Validator {
    /// The canonical form of `text` under this validator, or why it fails.
    /// `context` is the row's `customer_type` (for `customer_name`) or
    /// `id_type` (for `id_number`); `today` bounds birth dates. `Code`
    /// needs the code set and is checked by its caller; `NonNegative`
    /// applies to numbers and passes any text.
    pub fn canonical(
        self,
        text: &str,
        context: Option<&str>,
        today: chrono::NaiveDate,
    ) -> Result<String, crate::domain::DomainError> {
        use crate::domain::{
            Address, CompanyName, DomainError, Email, PersonName, Phone, Reason, ResidentId, TaxId,
            Uscc,
        };
        Ok(match self {
            Self::None | Self::NonNegative | Self::Code => text.to_string(),
            Self::ResidentId => ResidentId::parse_as_of(text, today)?.as_str().to_string(),
            Self::Uscc => Uscc::parse(text)?.as_str().to_string(),
            Self::Phone => Phone::parse(text)?.as_str().to_string(),
            Self::Email => Email::parse(text)?.as_str().to_string(),
            Self::TaxId => TaxId::parse(text)?.as_str().to_string(),
            Self::PersonName => PersonName::parse(text)?.as_str().to_string(),
            Self::CompanyName => CompanyName::parse(text)?.as_str().to_string(),
            Self::Address => Address::parse(text)?.as_str().to_string(),
            Self::CustomerName => match context {
                Some("individual") => PersonName::parse(text)?.as_str().to_string(),
                _ => CompanyName::parse(text)?.as_str().to_string(),
            },
            Self::IdNumber => match context {
                Some("resident_id") => ResidentId::parse_as_of(text, today)?.as_str().to_string(),
                Some("uscc") => Uscc::parse(text)?.as_str().to_string(),
                _ => {
                    let t: String = text
                        .chars()
                        .filter(|c| !c.is_whitespace())
                        .collect::<String>()
                        .to_uppercase();
                    if !(5..=20).contains(&t.len()) || !t.bytes().all(|b| b.is_ascii_alphanumeric())
                    {
                        return Err(DomainError::new(
                            Reason::InvalidIdNumber,
                            format!("document number {text:?} must be 5–20 letters and digits"),
                        ));
                    }
                    t
                }
            },
        })
    }

    /// Whether [`Validator::canonical`] accepts `text`, building the
    /// canonical form only where no cheaper check says the same.
    pub fn accepts(self, text: &str, context: Option<&str>, today: chrono::NaiveDate) -> bool {
        match self {
            Self::Address => crate::domain::Address::is_valid(text),
            _ => self.canonical(text, context, today).is_ok(),
        }
    }

    /// The validator's name as the schemas spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::ResidentId => "resident_id",
            Self::Uscc => "uscc",
            Self::Phone => "phone",
            Self::Email => "email",
            Self::TaxId => "tax_id",
            Self::PersonName => "person_name",
            Self::CompanyName => "company_name",
            Self::CustomerName => "customer_name",
            Self::Address => "address",
            Self::IdNumber => "id_number",
            Self::Code => "code",
            Self::NonNegative => "non_negative",
        }
    }

    /// The validator of a name (as [`Validator::name`] spells it).
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Self::None,
            Self::ResidentId,
            Self::Uscc,
            Self::Phone,
            Self::Email,
            Self::TaxId,
            Self::PersonName,
            Self::CompanyName,
            Self::CustomerName,
            Self::Address,
            Self::IdNumber,
            Self::Code,
            Self::NonNegative,
        ]
        .into_iter()
        .find(|v| v.name() == name)
    }
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
    /// Shown as null.
    Null,
}

impl<'de> Deserialize<'de> for Mask {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Mask::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Mask {
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        Ok(match s {
            "none" => Self::None,
            "redact" => Self::Redact,
            "hash" => Self::Hash,
            "year_only" => Self::YearOnly,
            "null" => Self::Null,
            _ => {
                let inner = s
                    .strip_prefix("keep(")
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(|| {
                        format!(
                            "unknown mask {s:?}: use none, keep(H,T), redact, hash, year_only or null"
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
            Self::Null => f.write_str("null"),
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
