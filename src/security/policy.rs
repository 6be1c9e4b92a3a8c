//! Roles resolved from the config: inheritance applied, every part set.

use std::collections::BTreeMap;

use crate::config::{Access, Config, RoleConfig};
use crate::schema::Level;

use super::SecurityError;

/// What a role may read and do.
#[derive(Debug, Clone)]
pub struct Role {
    pub name: String,
    pub description: String,
    tables: Vec<String>,
    deny_tables: Vec<String>,
    levels: BTreeMap<String, Access>,
    fields: BTreeMap<String, Access>,
    row_filters: BTreeMap<String, String>,
    pub free_sql: bool,
    named_queries: Vec<String>,
    actions: Vec<String>,
    pub formats: Vec<String>,
    pub max_rows: usize,
    /// The longest one query may run, in milliseconds.
    pub max_timeout_ms: u64,
    pub rate_per_second: u32,
    pub burst: u32,
}

/// `pattern` matches `name`: `*` anything, `prefix*`, or exactly.
fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

impl Role {
    /// May the role read this table or view?
    pub fn reads(&self, table: &str) -> bool {
        self.tables.iter().any(|p| matches(p, table))
            && !self.deny_tables.iter().any(|p| matches(p, table))
    }

    /// What a field of a table shows this role.
    pub fn access(&self, table: &str, field: &str, level: Level) -> Access {
        if let Some(a) = self
            .fields
            .get(&format!("{table}.{field}"))
            .or_else(|| self.fields.get(field))
        {
            return *a;
        }
        self.levels
            .get(&format!("{level:?}"))
            .copied()
            // A level the role does not mention is not shared.
            .unwrap_or(Access::Absent)
    }

    /// The row condition on a table (the table is `t`), if any.
    pub fn row_filter(&self, table: &str) -> Option<&str> {
        self.row_filters
            .get(table)
            .or_else(|| self.row_filters.get("*"))
            .map(String::as_str)
    }

    /// Patterns grant named queries; `!pattern` takes them away again.
    pub fn may_run(&self, named_query: &str) -> bool {
        let denied = self
            .named_queries
            .iter()
            .filter_map(|p| p.strip_prefix('!'))
            .any(|p| matches(p, named_query));
        !denied
            && self
                .named_queries
                .iter()
                .any(|p| !p.starts_with('!') && matches(p, named_query))
    }

    pub fn may(&self, action: &str) -> bool {
        self.actions.iter().any(|a| a == action || a == "*")
    }

    pub fn allows_format(&self, format: &str) -> bool {
        self.formats.iter().any(|f| f == format)
    }
}

/// Every role of the config, resolved.
#[derive(Debug, Clone)]
pub struct Policy {
    roles: BTreeMap<String, Role>,
}

impl Policy {
    pub fn from_config(config: &Config) -> Result<Self, SecurityError> {
        let mut roles = BTreeMap::new();
        for name in config.roles.keys() {
            roles.insert(name.clone(), resolve(config, name)?);
        }
        Ok(Self { roles })
    }

    pub fn role(&self, name: &str) -> Result<&Role, SecurityError> {
        self.roles
            .get(name)
            .ok_or_else(|| SecurityError::UnknownRole(name.to_string()))
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.roles.keys().map(String::as_str)
    }
}

/// A role's settings over those of the roles it inherits from.
fn resolve(config: &Config, name: &str) -> Result<Role, SecurityError> {
    let mut chain: Vec<&RoleConfig> = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    let mut at = name;
    loop {
        if seen.contains(&at) {
            return Err(SecurityError::Config(format!(
                "roles.{name}: inheritance loops through {at}"
            )));
        }
        seen.push(at);
        let rc = config
            .roles
            .get(at)
            .ok_or_else(|| SecurityError::UnknownRole(at.to_string()))?;
        chain.push(rc);
        match &rc.inherits {
            Some(parent) => at = parent,
            None => break,
        }
    }
    // Nearest first: the first that sets a part wins.
    fn pick<'a, T: 'a>(
        chain: &[&'a RoleConfig],
        f: impl Fn(&'a RoleConfig) -> Option<&'a T>,
    ) -> Option<&'a T> {
        chain.iter().find_map(|rc| f(rc))
    }
    let server_max = config.server.max_row_limit;
    if let Some(ms) = pick(&chain, |r| r.max_timeout_ms.as_ref())
        && *ms < config.server.min_query_timeout_ms
    {
        return Err(SecurityError::Config(format!(
            "roles.{name}.max_timeout_ms ({ms}) is below server.min_query_timeout_ms ({})",
            config.server.min_query_timeout_ms
        )));
    }
    for (level, _) in pick(&chain, |r| r.levels.as_ref()).into_iter().flatten() {
        if !matches!(level.as_str(), "L1" | "L2" | "L3" | "L4") {
            return Err(SecurityError::Config(format!(
                "roles.{name}.levels: {level:?} is not a level (L1 to L4)"
            )));
        }
    }
    Ok(Role {
        name: name.to_string(),
        description: pick(&chain, |r| r.description.as_ref())
            .cloned()
            .unwrap_or_default(),
        tables: pick(&chain, |r| r.tables.as_ref())
            .cloned()
            .unwrap_or_default(),
        deny_tables: pick(&chain, |r| r.deny_tables.as_ref())
            .cloned()
            .unwrap_or_default(),
        levels: pick(&chain, |r| r.levels.as_ref())
            .cloned()
            .unwrap_or_default(),
        fields: pick(&chain, |r| r.fields.as_ref())
            .cloned()
            .unwrap_or_default(),
        row_filters: pick(&chain, |r| r.row_filters.as_ref())
            .cloned()
            .unwrap_or_default(),
        free_sql: pick(&chain, |r| r.free_sql.as_ref())
            .copied()
            .unwrap_or(false),
        named_queries: pick(&chain, |r| r.named_queries.as_ref())
            .cloned()
            .unwrap_or_default(),
        actions: pick(&chain, |r| r.actions.as_ref())
            .cloned()
            .unwrap_or_default(),
        formats: pick(&chain, |r| r.formats.as_ref())
            .cloned()
            .unwrap_or_else(|| vec!["json".into()]),
        max_rows: pick(&chain, |r| r.max_rows.as_ref())
            .copied()
            .unwrap_or(server_max)
            .min(server_max),
        max_timeout_ms: pick(&chain, |r| r.max_timeout_ms.as_ref())
            .copied()
            .unwrap_or(config.server.max_query_timeout_ms)
            .min(config.server.max_query_timeout_ms),
        rate_per_second: pick(&chain, |r| r.rate_per_second.as_ref())
            .copied()
            .unwrap_or(100),
        burst: pick(&chain, |r| r.burst.as_ref()).copied().unwrap_or(200),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_roles_resolve() {
        let p = Policy::from_config(&Config::embedded()).unwrap();
        let analyst = p.role("analyst").unwrap();
        assert!(analyst.reads("customer"));
        assert!(!analyst.reads("audit_log"));
        assert_eq!(
            analyst.access("customer", "id_number", Level::L4),
            Access::Masked
        );
        assert_eq!(
            analyst.access("customer", "customer_id", Level::L2),
            Access::Clear
        );
        let tele = p.role("telesales").unwrap();
        assert_eq!(tele.access("customer", "phone", Level::L4), Access::Clear);
        assert_eq!(
            tele.access("customer", "id_number", Level::L4),
            Access::Masked
        );
        assert!(!tele.free_sql);
        assert!(tele.row_filter("policy").unwrap().contains("{agent_id}"));
        assert!(!tele.reads("quarantine"));
        assert!(!p.role("admin").unwrap().reads("audit_log"));
        assert!(!p.role("admin").unwrap().may_run("audit_volume"));
        assert!(p.role("admin").unwrap().may_run("customer_lookup"));
        assert!(p.role("operator").unwrap().reads("audit_log"));
        let auditor = p.role("auditor").unwrap();
        assert!(auditor.reads("audit_log") && !auditor.reads("customer"));
        assert!(p.role("root").is_err());
    }

    #[test]
    fn a_role_inherits_what_it_does_not_set() {
        let mut c = Config::embedded();
        c.roles.insert(
            "senior_analyst".into(),
            RoleConfig {
                inherits: Some("analyst".into()),
                fields: Some(BTreeMap::from([("customer.name".into(), Access::Clear)])),
                ..RoleConfig::default()
            },
        );
        let p = Policy::from_config(&c).unwrap();
        let r = p.role("senior_analyst").unwrap();
        assert!(r.free_sql && r.reads("policy") && !r.reads("audit_log"));
        assert_eq!(r.access("customer", "name", Level::L3), Access::Clear);
        assert_eq!(
            r.access("source_customer", "name", Level::L3),
            Access::Masked
        );
    }

    #[test]
    fn an_inheritance_loop_is_refused() {
        let mut c = Config::embedded();
        c.roles.get_mut("analyst").unwrap().inherits = Some("steward".into());
        c.roles.get_mut("steward").unwrap().inherits = Some("analyst".into());
        assert!(Policy::from_config(&c).is_err());
    }
}
