//! `custlake token create|list|revoke`: bearer tokens for the API and
//! `custlake sql --token`. Only a salted hash of each is kept.

use clap::{Args, Subcommand};

use super::CliError;
use crate::lake::Warehouse;
use crate::security::Security;
use crate::security::tokens::{self, NewToken};

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a token; it is printed once, alone on the last line.
    Create(CreateArgs),
    /// Every token with its user, role, expiry and state (never a secret).
    List {
        /// One JSON object per token.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id, or every token of a user; the next request
    /// with it fails.
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Who the token is for.
    #[arg(long)]
    pub user: String,
    /// A configured role (admin, analyst, telesales, steward, auditor, monitor, ...).
    #[arg(long)]
    pub role: String,
    /// A team the principal belongs to (row filters use them); repeatable.
    #[arg(long = "team", value_name = "TEAM")]
    pub teams: Vec<String>,
    /// A region; repeatable.
    #[arg(long = "region", value_name = "REGION")]
    pub regions: Vec<String>,
    /// The telesales agent id whose customers the principal sees.
    #[arg(long)]
    pub agent_id: Option<String>,
    /// How long the token lives: 90d, 12h, 30m (at most security.max_token_days).
    #[arg(long, default_value = "90d")]
    pub expires: String,
    /// A temporary grant: another role the token carries until --grant-expires.
    #[arg(long, value_name = "ROLE", requires = "grant_expires")]
    pub grant: Option<String>,
    /// When the grant ends (at most security.max_grant_days).
    #[arg(long, value_name = "DURATION", requires = "grant")]
    pub grant_expires: Option<String>,
    /// Print the token and its record as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct RevokeArgs {
    /// The token's id (`token list` shows it).
    pub id: Option<String>,
    /// Revoke every token of this user.
    #[arg(long)]
    pub user: Option<String>,
}

fn check_role(security: &Security, role: &str) -> Result<(), CliError> {
    if role == crate::security::LOCAL_ROLE {
        return Err(CliError::Usage(format!(
            "the role {role:?} is the local command line's own; a token cannot carry it"
        )));
    }
    security.policy.role(role).map(|_| ()).map_err(|_| {
        CliError::Usage(format!(
            "no role {role:?} is configured; roles: {}",
            security.policy.names().collect::<Vec<_>>().join(", ")
        ))
    })
}

pub(super) async fn run(
    wh: &Warehouse,
    security: &Security,
    command: &TokenCommand,
) -> Result<(), CliError> {
    match command {
        TokenCommand::Create(a) => {
            check_role(security, &a.role)?;
            let expires_in =
                tokens::parse_duration(&a.expires).map_err(|e| CliError::Usage(e.to_string()))?;
            let max = i64::from(wh.config.security.max_token_days);
            if expires_in > chrono::Duration::days(max) {
                return Err(CliError::Usage(format!(
                    "--expires {}: a token lives at most {max} days (security.max_token_days)",
                    a.expires
                )));
            }
            let grant = match (&a.grant, &a.grant_expires) {
                (Some(role), Some(d)) => {
                    check_role(security, role)?;
                    let d =
                        tokens::parse_duration(d).map_err(|e| CliError::Usage(e.to_string()))?;
                    let max = i64::from(wh.config.security.max_grant_days);
                    if d > chrono::Duration::days(max) {
                        return Err(CliError::Usage(format!(
                            "--grant-expires: a temporary grant lasts at most {max} days (security.max_grant_days)"
                        )));
                    }
                    Some((role.clone(), d))
                }
                _ => None,
            };
            let new = NewToken {
                user: a.user.clone(),
                role: a.role.clone(),
                teams: a.teams.clone(),
                regions: a.regions.clone(),
                agent_id: a.agent_id.clone(),
                expires_in,
                grant,
                created_by: crate::security::Principal::local().user,
            };
            let (record, token) = tokens::create(&wh.lake, &new).await.map_err(security_err)?;
            if a.json {
                let mut v = serde_json::to_value(&record).map_err(CliError::Json)?;
                if let Some(o) = v.as_object_mut() {
                    o.remove("salt");
                    o.remove("hash");
                    o.insert("token".into(), serde_json::json!(token));
                }
                println!("{v}");
            } else {
                println!(
                    "token {} for {} (role {}), expires {}",
                    record.id, record.user, record.role, record.expires_at
                );
                println!("{token}");
            }
            Ok(())
        }
        TokenCommand::List { json } => {
            let set = tokens::read(&wh.lake).await?.value;
            let now = chrono::Utc::now();
            if *json {
                for t in &set.tokens {
                    let mut v = serde_json::to_value(t).map_err(CliError::Json)?;
                    if let Some(o) = v.as_object_mut() {
                        o.remove("salt");
                        o.remove("hash");
                        o.insert("state".into(), serde_json::json!(t.state(now)));
                    }
                    println!("{v}");
                }
                return Ok(());
            }
            let mut table = comfy_table::Table::new();
            table.set_header([
                "id", "user", "role", "teams", "agent", "expires", "grant", "state",
            ]);
            for t in &set.tokens {
                table.add_row([
                    t.id.clone(),
                    t.user.clone(),
                    t.role.clone(),
                    t.teams.join(","),
                    t.agent_id.clone().unwrap_or_default(),
                    t.expires_at.clone(),
                    t.grant
                        .as_ref()
                        .map(|g| format!("{} until {}", g.role, g.expires_at))
                        .unwrap_or_default(),
                    t.state(now).to_string(),
                ]);
            }
            println!("{table}");
            Ok(())
        }
        TokenCommand::Revoke(a) => {
            let ids = tokens::revoke(&wh.lake, a.id.as_deref(), a.user.as_deref())
                .await
                .map_err(security_err)?;
            if ids.is_empty() {
                println!("nothing to revoke: no active token matched");
            } else {
                println!("revoked {}", ids.join(", "));
            }
            Ok(())
        }
    }
}

pub(super) fn security_err(e: crate::security::SecurityError) -> CliError {
    CliError::Security(e)
}
