//! Matching rules as configuration: which fields are compared and how,
//! which keys block records into candidate pairs, which rules merge
//! automatically and which only propose, and which source is trusted for
//! each golden field.
//!
//! The shipped defaults are `schemas/identity.toml`; `custlake dedupe
//! --rules FILE` and `custlake resolve --rules FILE` take any file in the
//! same format.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

/// The rules shipped with custlake for source customers.
pub const DEFAULT_RULES: &str = include_str!("../../schemas/identity.toml");

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("rules file {file}: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("rules file {file}: {message}")]
    Parse { file: String, message: String },
    #[error("rules file {file}: {message}")]
    Invalid { file: String, message: String },
}

impl crate::error::Classify for RulesError {
    fn kind(&self) -> crate::error::ErrorKind {
        match self {
            Self::Read { source, .. } => crate::error::file_io_kind(source),
            Self::Parse { .. } | Self::Invalid { .. } => crate::error::ErrorKind::InvalidData,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRules {
    #[serde(default)]
    field: Vec<RawField>,
    profile: Vec<RawProfile>,
    #[serde(default)]
    survivorship: Option<RawSurvivorship>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    name: String,
    #[serde(default)]
    normalize: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    name: String,
    #[serde(default)]
    when: Option<RawWhen>,
    #[serde(default)]
    valid: BTreeMap<String, String>,
    #[serde(default)]
    distinct: Vec<String>,
    #[serde(default)]
    strong: Vec<RawStrong>,
    #[serde(default)]
    block: Vec<RawBlock>,
    #[serde(default)]
    compare: Vec<RawCompare>,
    review_at: f64,
    #[serde(default)]
    merge_at: Option<f64>,
    #[serde(default = "default_max_block")]
    max_block: usize,
}

fn default_max_block() -> usize {
    100
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWhen {
    field: String,
    #[serde(rename = "in")]
    values: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStrong {
    name: String,
    exact: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBlock {
    #[serde(default)]
    name: Option<String>,
    keys: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCompare {
    field: String,
    method: String,
    /// `[minimum similarity, weight]`, best level first.
    levels: Vec<(f64, f64)>,
    /// Weight when the similarity is below every level.
    #[serde(rename = "else")]
    otherwise: f64,
    /// Weight when either value is missing (default 0: no evidence).
    #[serde(default)]
    missing: f64,
    /// Also compare with this field of the other record and keep the best
    /// (for values entered in the wrong field, such as swapped names).
    #[serde(default)]
    or_with: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSurvivorship {
    priority: Vec<String>,
    #[serde(default)]
    fields: BTreeMap<String, Vec<String>>,
}

/// How a field's values are prepared before blocking and comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalize {
    Trim,
    Lower,
    Upper,
    Digits,
    /// Collapse runs of white space to one space.
    Fold,
    /// Remove white space and punctuation (ASCII and full-width).
    StripPunct,
}

impl Normalize {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "trim" => Self::Trim,
            "lower" => Self::Lower,
            "upper" => Self::Upper,
            "digits" => Self::Digits,
            "fold" => Self::Fold,
            "strip_punct" => Self::StripPunct,
            _ => return None,
        })
    }

    pub(crate) fn apply(self, s: &str) -> String {
        match self {
            Self::Trim => s.trim().to_string(),
            Self::Lower => s.to_lowercase(),
            Self::Upper => s.to_uppercase(),
            Self::Digits => s.chars().filter(char::is_ascii_digit).collect(),
            Self::Fold => crate::domain::fold_whitespace(s),
            Self::StripPunct => s
                .chars()
                .filter(|c| !c.is_whitespace() && !c.is_ascii_punctuation() && !is_cjk_punct(*c))
                .collect(),
        }
    }
}

fn is_cjk_punct(c: char) -> bool {
    matches!(c, '\u{3000}'..='\u{303F}' | '\u{FF01}'..='\u{FF0F}' | '\u{FF1A}'..='\u{FF20}' | '\u{FF3B}'..='\u{FF40}' | '\u{FF5B}'..='\u{FF65}' | '·' | '•')
}

/// Which check a value must pass to count as a valid identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    ResidentId,
    Uscc,
    Any,
}

impl Validity {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "resident_id" => Self::ResidentId,
            "uscc" => Self::Uscc,
            "any" => Self::Any,
            _ => return None,
        })
    }

    pub(crate) fn check(self, v: &str) -> bool {
        match self {
            Self::ResidentId => v.len() == 18 && crate::domain::ResidentId::parse(v).is_ok(),
            Self::Uscc => crate::domain::Uscc::parse(v).is_ok(),
            Self::Any => true,
        }
    }
}

/// A transformation of a field's value into a blocking key part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFn {
    Whole,
    Prefix(usize),
    Suffix(usize),
    /// Toneless pinyin of Chinese characters (homophones share a key).
    Pinyin,
    /// The first four characters (a date's year).
    Year,
}

impl KeyFn {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "" => Self::Whole,
            "pinyin" => Self::Pinyin,
            "year" => Self::Year,
            _ => {
                if let Some(n) = s.strip_prefix("prefix") {
                    Self::Prefix(n.parse().ok().filter(|n| *n > 0)?)
                } else if let Some(n) = s.strip_prefix("suffix") {
                    Self::Suffix(n.parse().ok().filter(|n| *n > 0)?)
                } else {
                    return None;
                }
            }
        })
    }

    pub(crate) fn apply(self, v: &str, out: &mut String) {
        match self {
            Self::Whole => out.push_str(v),
            Self::Prefix(n) => out.extend(v.chars().take(n)),
            Self::Suffix(n) => {
                let count = v.chars().count();
                out.extend(v.chars().skip(count.saturating_sub(n)));
            }
            Self::Pinyin => crate::domain::push_pinyin(v, out),
            Self::Year => out.extend(v.chars().take(4)),
        }
    }
}

/// A comparison method, named in the rules file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Exact,
    JaroWinkler,
    Levenshtein,
    /// Dates as `YYYY-MM-DD` or `YYYYMMDD`: 1 equal; 0.8 one digit
    /// different or day and month swapped; 0 otherwise.
    Date,
    /// Phone numbers compared on their digits without the +86 prefix:
    /// 1 equal; 0.8 same last eight digits; 0.6 one digit different.
    Phone,
    /// Chinese person names by character, where a homophone (same toneless
    /// pinyin) counts 0.8 of a match; other scripts by Jaro-Winkler.
    ChineseName,
    /// Organisation names by their characters regardless of order
    /// (Dice coefficient over characters, brackets and spaces ignored),
    /// so `杭州华信科技有限公司` and `华信科技（杭州）有限公司` agree.
    OrgName,
}

impl Method {
    pub const NAMES: [&'static str; 7] = [
        "exact",
        "jaro_winkler",
        "levenshtein",
        "date",
        "phone",
        "chinese_name",
        "org_name",
    ];

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "exact" => Self::Exact,
            "jaro_winkler" => Self::JaroWinkler,
            "levenshtein" => Self::Levenshtein,
            "date" => Self::Date,
            "phone" => Self::Phone,
            "chinese_name" => Self::ChineseName,
            "org_name" => Self::OrgName,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
pub struct StrongRule {
    pub name: String,
    pub fields: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct BlockRule {
    pub name: String,
    pub keys: Vec<(usize, KeyFn)>,
}

#[derive(Debug, Clone)]
pub struct Comparison {
    pub field: usize,
    pub or_with: Option<usize>,
    pub method: Method,
    pub levels: Vec<(f64, f64)>,
    pub otherwise: f64,
    pub missing: f64,
}

impl Comparison {
    /// The weight a similarity earns.
    pub fn weight(&self, sim: Option<f64>) -> f64 {
        match sim {
            None => self.missing,
            Some(s) => self
                .levels
                .iter()
                .find(|(min, _)| s >= *min - 1e-9)
                .map_or(self.otherwise, |(_, w)| *w),
        }
    }
}

/// The rules for one kind of record (individuals, organisations, or every
/// record when no `when` is given).
#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub when: Option<(usize, Vec<String>)>,
    /// Per field: the check a value must pass to be used by strong rules
    /// and distinctness (fields not listed: any non-empty value).
    pub valid: Vec<Validity>,
    /// Fields whose different valid values forbid any automatic merge.
    pub distinct: Vec<usize>,
    pub strong: Vec<StrongRule>,
    pub blocks: Vec<BlockRule>,
    pub compare: Vec<Comparison>,
    pub review_at: f64,
    pub merge_at: Option<f64>,
    pub max_block: usize,
}

/// Source trust for survivorship.
#[derive(Debug, Clone, Default)]
pub struct Survivorship {
    pub priority: Vec<String>,
    pub fields: HashMap<String, Vec<String>>,
}

impl Survivorship {
    /// Rank of `source` for `field`: lower is more trusted; unlisted
    /// sources come last.
    pub fn rank(&self, field: &str, source: &str) -> usize {
        let list = self.fields.get(field).unwrap_or(&self.priority);
        list.iter().position(|s| s == source).unwrap_or(list.len())
    }
}

/// Parsed, checked rules.
#[derive(Debug, Clone)]
pub struct Rules {
    /// The fields the rules use, in the order records carry them.
    pub fields: Vec<String>,
    pub normalize: Vec<Vec<Normalize>>,
    pub profiles: Vec<Profile>,
    pub survivorship: Survivorship,
}

impl Rules {
    /// A hash of everything that decides a resolution (fields, normalisers,
    /// profiles, survivorship): results computed under rules with another
    /// fingerprint cannot be reused.
    pub fn fingerprint(&self) -> u64 {
        let fields: BTreeMap<&String, &Vec<String>> = self.survivorship.fields.iter().collect();
        let text = format!(
            "{:?}|{:?}|{:?}|{:?}|{:?}",
            self.fields, self.normalize, self.profiles, self.survivorship.priority, fields
        );
        crate::domain::fnv(&[text.as_str()])
    }

    pub fn default_rules() -> Result<Self, RulesError> {
        Self::parse(DEFAULT_RULES, "schemas/identity.toml")
    }

    pub fn from_file(path: &std::path::Path) -> Result<Self, RulesError> {
        let text = std::fs::read_to_string(path).map_err(|source| RulesError::Read {
            file: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, file: &str) -> Result<Self, RulesError> {
        let raw: RawRules = toml::from_str(text).map_err(|e| RulesError::Parse {
            file: file.to_string(),
            message: e.to_string(),
        })?;
        let invalid = |message: String| RulesError::Invalid {
            file: file.to_string(),
            message,
        };
        let mut fields = Fields::default();
        for f in &raw.field {
            fields.declare(f).map_err(invalid)?;
        }
        if raw.profile.is_empty() {
            return Err(invalid("at least one [[profile]] is required".into()));
        }
        let mut profiles = Vec::new();
        for p in &raw.profile {
            profiles.push(
                profile(p, &mut fields).map_err(|m| invalid(format!("profile {}: {m}", p.name)))?,
            );
        }
        for p in &mut profiles {
            p.valid.resize(fields.names.len(), Validity::Any);
        }
        let survivorship = raw
            .survivorship
            .map(|s| Survivorship {
                priority: s.priority,
                fields: s.fields.into_iter().collect(),
            })
            .unwrap_or_default();
        Ok(Rules {
            fields: fields.names,
            normalize: fields.normalize,
            profiles,
            survivorship,
        })
    }

    pub fn field_index(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f == name)
    }
}

/// The fields the rules use, in order, with their normalisers.
#[derive(Default)]
struct Fields {
    names: Vec<String>,
    normalize: Vec<Vec<Normalize>>,
}

impl Fields {
    /// A `[[field]]` declaration.
    fn declare(&mut self, f: &RawField) -> Result<(), String> {
        if self.names.contains(&f.name) {
            return Err(format!("field {} is declared twice", f.name));
        }
        let mut ns = Vec::new();
        for n in &f.normalize {
            ns.push(Normalize::parse(n).ok_or_else(|| {
                format!(
                    "field {}: unknown normaliser {n:?} (use trim, lower, upper, digits, fold or strip_punct)",
                    f.name
                )
            })?);
        }
        self.names.push(f.name.clone());
        self.normalize.push(ns);
        Ok(())
    }

    /// A field's index; fields used but not declared are taken as they are.
    fn index(&mut self, name: &str) -> usize {
        if let Some(i) = self.names.iter().position(|f| f == name) {
            i
        } else {
            self.names.push(name.to_string());
            self.normalize.push(Vec::new());
            self.names.len() - 1
        }
    }
}

/// One `[[profile]]`, checked.
fn profile(p: &RawProfile, fields: &mut Fields) -> Result<Profile, String> {
    let when = p
        .when
        .as_ref()
        .map(|w| (fields.index(&w.field), w.values.clone()));
    let mut valid: Vec<Validity> = Vec::new();
    for (f, v) in &p.valid {
        let v = Validity::parse(v).ok_or_else(|| {
            format!("valid.{f}: unknown check {v:?} (use resident_id, uscc or any)")
        })?;
        let i = fields.index(f);
        if valid.len() <= i {
            valid.resize(i + 1, Validity::Any);
        }
        valid[i] = v;
    }
    let distinct = p.distinct.iter().map(|f| fields.index(f)).collect();
    let mut strong = Vec::new();
    for s in &p.strong {
        if s.exact.is_empty() {
            return Err(format!("strong rule {}: `exact` is empty", s.name));
        }
        strong.push(StrongRule {
            name: s.name.clone(),
            fields: s.exact.iter().map(|f| fields.index(f)).collect(),
        });
    }
    let blocks = p
        .block
        .iter()
        .map(|b| block(b, fields))
        .collect::<Result<Vec<_>, _>>()?;
    let compare = p
        .compare
        .iter()
        .map(|c| comparison(c, fields))
        .collect::<Result<Vec<_>, _>>()?;
    if strong.is_empty() && p.merge_at.is_none() && compare.is_empty() {
        return Err("no strong rule, no comparison: nothing could ever match".into());
    }
    if !compare.is_empty() && blocks.is_empty() {
        return Err(
            "comparisons need at least one [[profile.block]] to find candidate pairs".into(),
        );
    }
    if let Some(m) = p.merge_at
        && m < p.review_at
    {
        return Err(format!(
            "merge_at ({m}) must not be below review_at ({})",
            p.review_at
        ));
    }
    Ok(Profile {
        name: p.name.clone(),
        when,
        valid,
        distinct,
        strong,
        blocks,
        compare,
        review_at: p.review_at,
        merge_at: p.merge_at,
        max_block: p.max_block.max(2),
    })
}

/// One `[[profile.block]]`.
fn block(b: &RawBlock, fields: &mut Fields) -> Result<BlockRule, String> {
    if b.keys.is_empty() {
        return Err("a block has no keys".into());
    }
    let mut keys = Vec::new();
    for k in &b.keys {
        let (f, func) = k.split_once(':').unwrap_or((k.as_str(), ""));
        let func = KeyFn::parse(func).ok_or_else(|| {
            format!("block key {k:?}: unknown function (use prefixN, suffixN, pinyin or year)")
        })?;
        keys.push((fields.index(f), func));
    }
    Ok(BlockRule {
        name: b.name.clone().unwrap_or_else(|| b.keys.join("+")),
        keys,
    })
}

/// One `[[profile.compare]]`.
fn comparison(c: &RawCompare, fields: &mut Fields) -> Result<Comparison, String> {
    let method = Method::parse(&c.method).ok_or_else(|| {
        format!(
            "compare {}: unknown method {:?} (use {})",
            c.field,
            c.method,
            Method::NAMES.join(", ")
        )
    })?;
    if c.levels.windows(2).any(|w| w[0].0 < w[1].0) {
        return Err(format!(
            "compare {}: levels must be ordered from the highest similarity down",
            c.field
        ));
    }
    if c.levels.iter().any(|(s, _)| !(0.0..=1.0).contains(s)) {
        return Err(format!(
            "compare {}: a level's similarity must be between 0 and 1",
            c.field
        ));
    }
    let or_with = c.or_with.as_ref().map(|f| fields.index(f));
    Ok(Comparison {
        field: fields.index(&c.field),
        or_with,
        method,
        levels: c.levels.clone(),
        otherwise: c.otherwise,
        missing: c.missing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_rules_parse() {
        let r = Rules::default_rules().unwrap();
        assert!(r.profiles.len() >= 2);
        assert!(r.field_index("id_number").is_some());
        let ind = &r.profiles[0];
        assert!(
            ind.merge_at.is_none(),
            "individuals merge on strong rules only"
        );
    }

    #[test]
    fn errors_name_the_problem() {
        let bad = r#"
[[profile]]
name = "p"
review_at = 1.0
[[profile.block]]
keys = ["a:soundex"]
[[profile.compare]]
field = "a"
method = "exact"
levels = [[1.0, 1.0]]
else = 0.0
"#;
        let e = Rules::parse(bad, "f.toml").unwrap_err().to_string();
        assert!(e.contains("a:soundex") && e.contains("f.toml"), "{e}");
        let bad = bad
            .replace("a:soundex", "a")
            .replace("\"exact\"", "\"fuzzy\"");
        let e = Rules::parse(&bad, "f.toml").unwrap_err().to_string();
        assert!(e.contains("fuzzy"), "{e}");
    }
}
