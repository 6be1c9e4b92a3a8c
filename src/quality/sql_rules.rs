//! The rules written in SQL (`sql/quality/*.sql`): their files read, and
//! those that read one row per record of their own table rewritten as
//! expressions of that table's query.

use std::collections::BTreeMap;

use super::QualityError;
use super::rules::Join;
use crate::schema::Level;

/// The rules written in SQL, as shipped in `sql/quality/`.
const FILES: &[(&str, &str)] = &[
    (
        "policy_term.sql",
        include_str!("../../sql/quality/policy_term.sql"),
    ),
    (
        "claim_in_cover.sql",
        include_str!("../../sql/quality/claim_in_cover.sql"),
    ),
    (
        "claim_reported_after_loss.sql",
        include_str!("../../sql/quality/claim_reported_after_loss.sql"),
    ),
];

/// A rule of `sql/quality/`: its header and its query.
#[derive(Debug, Clone)]
pub struct SqlRule {
    pub file: String,
    pub name: String,
    pub dimension: String,
    pub table: String,
    pub field: String,
    pub team: String,
    pub level: Option<Level>,
    pub description: String,
    pub sql: String,
}

impl SqlRule {
    /// Parse a rule file: `-- key: value` header lines (name, dimension,
    /// table, field, team, description, optional level), then the query.
    pub fn parse(file: &str, text: &str) -> Result<Self, QualityError> {
        let bad = |m: String| QualityError::Rule(file.to_string(), m);
        let mut header = BTreeMap::new();
        let mut body = String::new();
        let mut in_header = true;
        for line in text.lines() {
            if in_header && let Some(rest) = line.trim_start().strip_prefix("--") {
                if let Some((k, v)) = rest.split_once(':') {
                    let k = k.trim();
                    if !k.contains(' ') && !k.is_empty() {
                        header.insert(k.to_string(), v.trim().to_string());
                    }
                }
                continue;
            }
            in_header = false;
            body.push_str(line);
            body.push('\n');
        }
        let get = |k: &str| {
            header
                .get(k)
                .cloned()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| bad(format!("the header has no {k}")))
        };
        let dimension = get("dimension")?;
        if !crate::config::DIMENSIONS.contains(&dimension.as_str()) {
            return Err(bad(format!(
                "dimension {dimension:?}: use one of {}",
                crate::config::DIMENSIONS.join(", ")
            )));
        }
        let level = match header.get("level") {
            None => None,
            Some(l) => Some(l.parse::<Level>().map_err(bad)?),
        };
        let sql = body.trim().trim_end_matches(';').to_string();
        if !sql.contains("{team}") {
            return Err(bad(
                "the query must select {team} AS owning_team (the header's team expression)".into(),
            ));
        }
        Ok(Self {
            file: file.to_string(),
            name: get("name")?,
            dimension,
            table: get("table")?,
            field: get("field")?,
            team: get("team")?,
            level,
            description: header.get("description").cloned().unwrap_or_default(),
            sql,
        })
    }
}

/// The rules of `sql/quality/`.
pub fn sql_rules() -> Result<Vec<SqlRule>, QualityError> {
    FILES.iter().map(|(f, t)| SqlRule::parse(f, t)).collect()
}

/// A rule of `sql/quality/` as expressions of its table's query.
#[derive(Debug, PartialEq)]
pub(super) struct Inlined {
    pub(super) applies: String,
    pub(super) passes: String,
    pub(super) value: String,
    pub(super) team: String,
}

/// `body` (a rule's query) as expressions of `table`'s query, when it is
/// exactly `SELECT <key> AS record_key, … AS owning_team, … AS value, … AS
/// passed FROM <table> t [joins] [WHERE …]` with a single-field key and
/// each join one of `joins` (the table query's own): one row per record,
/// so `bool_and(passed)` over the record's rows is `passed` itself.
pub(super) fn inline(
    body: &str,
    table: &str,
    key_parts: &[String],
    joins: &[Join],
) -> Option<Inlined> {
    use datafusion::sql::sqlparser::ast::{SelectItem, SetExpr, Statement};
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    let [key] = key_parts else { return None };
    let query = |sql: &str| -> Option<Box<datafusion::sql::sqlparser::ast::Query>> {
        match Parser::parse_sql(&GenericDialect {}, sql).ok()?.pop()? {
            Statement::Query(q) => Some(q),
            _ => None,
        }
    };
    let q = query(body)?;
    let SetExpr::Select(select) = q.body.as_ref() else {
        return None;
    };
    let [from] = select.from.as_slice() else {
        return None;
    };
    // The table itself as `t`, and only the table query's own joins.
    let own = joins
        .iter()
        .map(Join::left_join)
        .collect::<Vec<_>>()
        .join(" ");
    let own = query(&format!("SELECT 1 FROM {table} t {own}"))?;
    let SetExpr::Select(own) = own.body.as_ref() else {
        return None;
    };
    let own = own.from.first()?;
    if from.relation.to_string() != own.relation.to_string()
        || !from
            .joins
            .iter()
            .all(|j| own.joins.iter().any(|o| o.to_string() == j.to_string()))
    {
        return None;
    }
    let mut items = BTreeMap::new();
    for item in &select.projection {
        let SelectItem::ExprWithAlias { expr, alias } = item else {
            return None;
        };
        items.insert(alias.value.to_lowercase(), expr.to_string());
    }
    let names: Vec<&str> = items.keys().map(String::as_str).collect();
    if names != ["owning_team", "passed", "record_key", "value"] {
        return None;
    }
    let record_key = &items["record_key"];
    let key_column = key.strip_prefix("CAST(").map_or(key.as_str(), |k| {
        k.strip_suffix(" AS VARCHAR)").unwrap_or(k)
    });
    if record_key != key_column && *record_key != format!("CAST({key_column} AS VARCHAR)") {
        return None;
    }
    // Nothing else: no grouping, ordering, limit, distinct or set
    // operation (the query is the sum of the parts read above).
    let rebuilt = format!(
        "SELECT {} FROM {from}{}",
        select
            .projection
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        select
            .selection
            .as_ref()
            .map(|w| format!(" WHERE {w}"))
            .unwrap_or_default()
    );
    if query(&rebuilt)?.to_string() != q.to_string() {
        return None;
    }
    Some(Inlined {
        applies: select
            .selection
            .as_ref()
            .map_or_else(|| "true".to_string(), |w| format!("({w})")),
        passes: format!("({})", items["passed"]),
        value: format!("({})", items["value"]),
        team: format!("({})", items["owning_team"]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own() -> [Join; 1] {
        [Join::new(
            "source_customer",
            "s",
            "s.source_key = t.source_key",
        )]
    }

    #[test]
    fn a_rule_on_its_own_rows_becomes_expressions_of_the_table_query() {
        let key = ["t.claim_no".to_string()];
        let got = inline(
            "SELECT t.claim_no AS record_key, (s.owning_team) AS owning_team,
                    CAST(t.report_date AS VARCHAR) AS value, t.report_date >= t.loss_date AS passed
             FROM claim t
             left join source_customer s ON s.source_key = t.source_key
             WHERE t.loss_date IS NOT NULL",
            "claim",
            &key,
            &own(),
        );
        assert_eq!(
            got,
            Some(Inlined {
                applies: "(t.loss_date IS NOT NULL)".into(),
                passes: "(t.report_date >= t.loss_date)".into(),
                value: "(CAST(t.report_date AS VARCHAR))".into(),
                team: "((s.owning_team))".into(),
            })
        );
    }

    #[test]
    fn a_rule_that_groups_joins_elsewhere_or_keys_otherwise_stays_a_join() {
        let key = ["t.claim_no".to_string()];
        let own = own();
        let select = "SELECT t.claim_no AS record_key, t.owning_team AS owning_team, \
                      CAST(t.loss_date AS VARCHAR) AS value, true AS passed";
        for body in [
            // Another table's rows (one claim, many policies).
            format!("{select} FROM claim t LEFT JOIN policy p ON p.policy_no = t.policy_no"),
            // Another table altogether.
            format!("{select} FROM policy t"),
            // Grouped, limited, distinct.
            format!("{select} FROM claim t GROUP BY t.claim_no, t.owning_team, t.loss_date"),
            format!("{select} FROM claim t LIMIT 5"),
            format!("SELECT DISTINCT {} FROM claim t", &select[7..]),
            // Keyed by something else.
            "SELECT t.policy_no AS record_key, t.owning_team AS owning_team, \
             CAST(t.loss_date AS VARCHAR) AS value, true AS passed FROM claim t"
                .to_string(),
            // A union.
            format!("{select} FROM claim t UNION ALL {select} FROM claim t"),
        ] {
            assert_eq!(inline(&body, "claim", &key, &own), None, "{body}");
        }
        // Two-field keys are not inlined.
        let two = ["t.source_system".to_string(), "t.source_id".to_string()];
        assert_eq!(
            inline(&format!("{select} FROM claim t"), "claim", &two, &own),
            None
        );
    }
}
