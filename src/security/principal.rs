//! Who is asking: a user, their role and the attributes row filters use.

use serde::{Deserialize, Serialize};

/// The role of the lake's local operator (commands run without a token);
/// no credential may carry it.
pub const LOCAL_ROLE: &str = "operator";

/// The authenticated caller of a request or command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    pub user: String,
    pub role: String,
    #[serde(default)]
    pub teams: Vec<String>,
    #[serde(default)]
    pub regions: Vec<String>,
    #[serde(default)]
    pub agent_id: Option<String>,
    /// How the caller proved it: `token:<id>`, `jwt`, or `local` for a
    /// command run by the lake's operator without a token.
    pub via: String,
}

impl Principal {
    /// The operator at the lake's own machine: a command run without
    /// `--token` reads the lake's files directly and is audited as such.
    pub fn local() -> Self {
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "operator".into());
        Self {
            user: format!("local:{user}"),
            role: LOCAL_ROLE.into(),
            teams: Vec::new(),
            regions: Vec::new(),
            agent_id: None,
            via: "local".into(),
        }
    }
}

/// A SQL literal for a value (quotes doubled), or `NULL`.
pub(crate) fn literal(v: Option<&str>) -> String {
    match v {
        Some(v) => format!("'{}'", v.replace('\'', "''")),
        None => "NULL".into(),
    }
}

/// A comma-separated list of SQL literals; `NULL` when empty, so that
/// `x IN ({teams})` holds for no row.
pub(crate) fn literal_list(vs: &[String]) -> String {
    if vs.is_empty() {
        return "NULL".into();
    }
    vs.iter()
        .map(|v| literal(Some(v)))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Principal {
    /// `template` with `{user}`, `{agent_id}`, `{teams}` and `{regions}`
    /// replaced by this principal's attributes as SQL literals.
    ///
    /// One pass over the template: a value put in is never read again as
    /// template, so an attribute holding `{teams}` stays text.
    pub fn render(&self, template: &str) -> String {
        let mut out = String::with_capacity(template.len() + 32);
        let mut rest = template;
        while let Some(at) = rest.find('{') {
            out.push_str(&rest[..at]);
            let tail = &rest[at..];
            let value = [
                ("{user}", literal(Some(&self.user))),
                ("{agent_id}", literal(self.agent_id.as_deref())),
                ("{teams}", literal_list(&self.teams)),
                ("{regions}", literal_list(&self.regions)),
            ]
            .into_iter()
            .find(|(k, _)| tail.starts_with(k));
            match value {
                Some((k, v)) => {
                    out.push_str(&v);
                    rest = &tail[k.len()..];
                }
                None => {
                    out.push('{');
                    rest = &tail[1..];
                }
            }
        }
        out.push_str(rest);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_render_as_quoted_literals() {
        let p = Principal {
            user: "o'brien".into(),
            role: "steward".into(),
            teams: vec!["north".into(), "x'); DROP".into()],
            regions: vec![],
            agent_id: None,
            via: "jwt".into(),
        };
        assert_eq!(
            p.render(
                "t.owning_team IN ({teams}) AND a = {agent_id} AND u = {user} AND r IN ({regions})"
            ),
            "t.owning_team IN ('north', 'x''); DROP') AND a = NULL AND u = 'o''brien' AND r IN (NULL)"
        );
        // An attribute that looks like a placeholder stays a literal.
        let sneaky = Principal {
            agent_id: Some("x{teams}y".into()),
            teams: vec![" OR 1=1 OR t.agent_id = ".into()],
            ..p
        };
        assert_eq!(
            sneaky.render("t.agent_id = {agent_id}"),
            "t.agent_id = 'x{teams}y'"
        );
    }
}
