//! Bearer tokens issued by `custlake token create`. A token reads
//! `cl_<id>_<secret>`; the lake keeps only the id, a random salt and
//! SHA-256(salt ‖ secret), in its catalog (`_catalog/security/tokens`), so
//! a revocation written by any process is seen by the next request of
//! every server.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::lake::catalog::{self, Stamped, Versioned};
use crate::lake::{Lake, LakeError};

use super::{Principal, SecurityError};

const KIND: &str = "security/tokens";

/// A temporary grant: a role the token carries until it expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub role: String,
    pub expires_at: String,
}

/// One token as stored (no secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub user: String,
    pub role: String,
    #[serde(default)]
    pub teams: Vec<String>,
    #[serde(default)]
    pub regions: Vec<String>,
    #[serde(default)]
    pub agent_id: Option<String>,
    pub created_at: String,
    pub created_by: String,
    pub expires_at: String,
    #[serde(default)]
    pub revoked_at: Option<String>,
    #[serde(default)]
    pub grant: Option<Grant>,
    /// Hex salt and hex SHA-256(salt ‖ secret).
    pub salt: String,
    pub hash: String,
}

fn time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

impl TokenRecord {
    /// `active`, `expired` or `revoked` at `now`.
    pub fn state(&self, now: DateTime<Utc>) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if time(&self.expires_at).is_none_or(|e| e <= now) {
            "expired"
        } else {
            "active"
        }
    }

    /// The principal this token stands for at `now` (its grant's role
    /// while the grant lasts).
    pub fn principal(&self, now: DateTime<Utc>) -> Principal {
        let role = match &self.grant {
            Some(g) if time(&g.expires_at).is_some_and(|e| e > now) => g.role.clone(),
            _ => self.role.clone(),
        };
        Principal {
            user: self.user.clone(),
            role,
            teams: self.teams.clone(),
            regions: self.regions.clone(),
            agent_id: self.agent_id.clone(),
            via: format!("token:{}", self.id),
        }
    }
}

/// Every token of the lake.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TokenSet {
    #[serde(default)]
    pub at: String,
    #[serde(default)]
    pub tokens: Vec<TokenRecord>,
}

impl Stamped for TokenSet {
    fn at(&self) -> DateTime<Utc> {
        time(&self.at).unwrap_or_default()
    }
}

/// What `token create` asks for.
#[derive(Debug, Clone, Default)]
pub struct NewToken {
    pub user: String,
    pub role: String,
    pub teams: Vec<String>,
    pub regions: Vec<String>,
    pub agent_id: Option<String>,
    pub expires_in: Duration,
    pub grant: Option<(String, Duration)>,
    pub created_by: String,
}

fn random_hex(bytes: usize) -> Result<String, SecurityError> {
    let mut buf = vec![0u8; bytes];
    getrandom_02::getrandom(&mut buf)
        .map_err(|e| SecurityError::Internal(format!("no randomness: {e}")))?;
    Ok(hex::encode(buf))
}

fn digest(salt: &str, secret: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(secret.as_bytes());
    hex::encode(h.finalize())
}

/// Equal without an early exit.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A duration such as `90d`, `12h`, `30m`.
pub fn parse_duration(s: &str) -> Result<Duration, SecurityError> {
    let s = s.trim();
    let bad =
        || SecurityError::Invalid(format!("{s:?} is not a duration: use e.g. 90d, 12h or 30m"));
    let (n, unit) = s.split_at(s.len().saturating_sub(1));
    let n: i64 = n.parse().map_err(|_| bad())?;
    if n <= 0 {
        return Err(bad());
    }
    match unit {
        "d" => Ok(Duration::days(n)),
        "h" => Ok(Duration::hours(n)),
        "m" => Ok(Duration::minutes(n)),
        _ => Err(bad()),
    }
}

/// The tokens as stored now.
pub async fn read(lake: &Lake) -> Result<Versioned<TokenSet>, LakeError> {
    catalog::read(lake, KIND, None).await
}

/// Change the token set: read, apply, write the next version; a write
/// that loses a race to another process reads again and reapplies.
async fn change<T>(
    lake: &Lake,
    mut f: impl FnMut(&mut TokenSet) -> Result<T, SecurityError>,
) -> Result<T, SecurityError> {
    for _ in 0..20 {
        let current = read(lake).await?;
        let mut set = current.value.clone();
        let out = f(&mut set)?;
        set.at = catalog::now();
        if catalog::try_write(lake, KIND, current.version, &set)
            .await?
            .is_some()
        {
            catalog::prune(lake, KIND, current.version + 1).await;
            return Ok(out);
        }
    }
    Err(SecurityError::Internal(
        "the token list kept changing under this command; run it again".into(),
    ))
}

/// Issue a token: returns its record and the token text, shown once.
pub async fn create(lake: &Lake, new: &NewToken) -> Result<(TokenRecord, String), SecurityError> {
    if new.user.trim().is_empty() {
        return Err(SecurityError::Invalid("a token needs a user".into()));
    }
    let id = random_hex(6)?;
    let secret = random_hex(32)?;
    let salt = random_hex(16)?;
    let now = Utc::now();
    let rfc = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let record = TokenRecord {
        id: id.clone(),
        user: new.user.clone(),
        role: new.role.clone(),
        teams: new.teams.clone(),
        regions: new.regions.clone(),
        agent_id: new.agent_id.clone(),
        created_at: rfc(now),
        created_by: new.created_by.clone(),
        expires_at: rfc(now + new.expires_in),
        revoked_at: None,
        grant: new.grant.as_ref().map(|(role, d)| Grant {
            role: role.clone(),
            expires_at: rfc(now + *d),
        }),
        hash: digest(&salt, &secret),
        salt,
    };
    let stored = record.clone();
    change(lake, move |set| {
        set.tokens.push(stored.clone());
        Ok(())
    })
    .await?;
    Ok((record, format!("cl_{id}_{secret}")))
}

/// Revoke one token by id, or every token of a user; returns the ids revoked.
pub async fn revoke(
    lake: &Lake,
    id: Option<&str>,
    user: Option<&str>,
) -> Result<Vec<String>, SecurityError> {
    let now = catalog::now();
    change(lake, |set| {
        let mut hit = Vec::new();
        for t in &mut set.tokens {
            let chosen = id.is_some_and(|i| t.id == i) || user.is_some_and(|u| t.user == u);
            if chosen && t.revoked_at.is_none() {
                t.revoked_at = Some(now.clone());
                hit.push(t.id.clone());
            }
        }
        if hit.is_empty() && id.is_some_and(|i| !set.tokens.iter().any(|t| t.id == i)) {
            return Err(SecurityError::Invalid(format!(
                "no token {:?}",
                id.unwrap_or_default()
            )));
        }
        Ok(hit)
    })
    .await
}

/// Why a credential was not accepted (the 401's detail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    Malformed,
    Unknown,
    Expired,
    Revoked,
}

impl Rejected {
    pub fn reason(self) -> &'static str {
        match self {
            Self::Malformed => "the credential is malformed",
            Self::Unknown => "the token is not known",
            Self::Expired => "the token has expired",
            Self::Revoked => "the token was revoked",
        }
    }
}

/// The principal of a token text, checked against `set` at `now`.
pub fn verify(set: &TokenSet, token: &str, now: DateTime<Utc>) -> Result<Principal, Rejected> {
    let rest = token.strip_prefix("cl_").ok_or(Rejected::Malformed)?;
    let (id, secret) = rest.split_once('_').ok_or(Rejected::Malformed)?;
    if id.is_empty() || secret.is_empty() {
        return Err(Rejected::Malformed);
    }
    let record = set
        .tokens
        .iter()
        .find(|t| t.id == id)
        .ok_or(Rejected::Unknown)?;
    if !same(&digest(&record.salt, secret), &record.hash) {
        return Err(Rejected::Unknown);
    }
    match record.state(now) {
        "revoked" => Err(Rejected::Revoked),
        "expired" => Err(Rejected::Expired),
        _ => Ok(record.principal(now)),
    }
}

/// A server's view of the token set: re-read when the catalog has a newer
/// version (one listing per request), so revocations apply at once.
#[derive(Default)]
pub struct TokenCache {
    current: tokio::sync::Mutex<(u64, std::sync::Arc<TokenSet>)>,
}

impl TokenCache {
    pub async fn get(&self, lake: &Lake) -> Result<std::sync::Arc<TokenSet>, LakeError> {
        let latest = catalog::latest_version(lake, KIND).await?;
        let mut cur = self.current.lock().await;
        if cur.0 != latest || latest == 0 {
            let v = read(lake).await?;
            *cur = (v.version, std::sync::Arc::new(v.value));
        }
        Ok(cur.1.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(secret: &str) -> TokenRecord {
        TokenRecord {
            id: "abc123".into(),
            user: "ann".into(),
            role: "analyst".into(),
            teams: vec![],
            regions: vec![],
            agent_id: None,
            created_at: "2026-01-01T00:00:00Z".into(),
            created_by: "t".into(),
            expires_at: "2027-01-01T00:00:00Z".into(),
            revoked_at: None,
            grant: Some(Grant {
                role: "steward".into(),
                expires_at: "2026-06-01T00:00:00Z".into(),
            }),
            salt: "5a17".into(),
            hash: digest("5a17", secret),
        }
    }

    #[test]
    fn a_token_verifies_only_with_its_secret_and_while_valid() {
        let set = TokenSet {
            at: String::new(),
            tokens: vec![record("s3cret")],
        };
        let may = time("2026-05-01T00:00:00Z").unwrap();
        let p = verify(&set, "cl_abc123_s3cret", may).unwrap();
        assert_eq!((p.user.as_str(), p.role.as_str()), ("ann", "steward"));
        let july = time("2026-07-01T00:00:00Z").unwrap();
        assert_eq!(
            verify(&set, "cl_abc123_s3cret", july).unwrap().role,
            "analyst"
        );
        assert_eq!(verify(&set, "cl_abc123_wrong", may), Err(Rejected::Unknown));
        assert_eq!(verify(&set, "cl_zzz_s3cret", may), Err(Rejected::Unknown));
        assert_eq!(verify(&set, "Bearer x", may), Err(Rejected::Malformed));
        let later = time("2027-02-01T00:00:00Z").unwrap();
        assert_eq!(
            verify(&set, "cl_abc123_s3cret", later),
            Err(Rejected::Expired)
        );
        let mut revoked = set.clone();
        revoked.tokens[0].revoked_at = Some("2026-02-01T00:00:00Z".into());
        assert_eq!(
            verify(&revoked, "cl_abc123_s3cret", may),
            Err(Rejected::Revoked)
        );
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90d").unwrap(), Duration::days(90));
        assert_eq!(parse_duration("12h").unwrap(), Duration::hours(12));
        assert!(parse_duration("0d").is_err());
        assert!(parse_duration("1y").is_err());
        assert!(parse_duration("").is_err());
    }
}
