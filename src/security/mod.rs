//! Who may read and do what: principals and their credentials (tokens,
//! JWTs), roles from the config, secured views with masks and row filters,
//! and the hash-chained audit trail.

pub mod audit;
pub mod audit_table;
pub mod jwt;
mod mask;
mod policy;
mod principal;
pub mod tokens;
mod views;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::{Classify, ErrorKind};
use crate::lake::catalog::{self, Stamped};
use crate::lake::{Lake, LakeError};

pub use mask::Masks;
pub use policy::{Policy, Role};
pub use principal::{LOCAL_ROLE, Principal};
pub use views::{ColumnAccess, FencedExec, SecuredSchema, columns};

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// No usable credential.
    #[error("{0}")]
    Unauthenticated(String),
    /// The role may not do this.
    #[error("{0}")]
    Forbidden(String),
    #[error("no role {0:?} is configured")]
    UnknownRole(String),
    #[error("{0}")]
    Invalid(String),
    #[error("security configuration: {0}")]
    Config(String),
    #[error("audit trail: {0}")]
    Audit(String),
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),
}

impl Classify for SecurityError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Unauthenticated(_) => ErrorKind::Unauthenticated,
            Self::Forbidden(_) => ErrorKind::Forbidden,
            Self::UnknownRole(_) | Self::Invalid(_) => ErrorKind::InvalidParameter,
            Self::Config(_) => ErrorKind::Config,
            Self::Audit(_) => ErrorKind::StorageUnavailable,
            Self::Internal(_) => ErrorKind::Internal,
            Self::Lake(e) => e.kind(),
            Self::DataFusion(e) => crate::error::datafusion_kind(e),
        }
    }
}

/// The lake's random salt for the `hash` mask, made once.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Salt {
    at: String,
    salt: String,
}

impl Stamped for Salt {
    fn at(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::parse_from_rfc3339(&self.at)
            .map(|t| t.with_timezone(&chrono::Utc))
            .unwrap_or_default()
    }
}

async fn lake_salt(lake: &Lake) -> Result<Vec<u8>, SecurityError> {
    const KIND: &str = "security/salt";
    loop {
        let v = catalog::read::<Salt>(lake, KIND, None).await?;
        if v.version > 0 {
            return Ok(v.value.salt.into_bytes());
        }
        let mut b = [0u8; 32];
        getrandom_02::getrandom(&mut b)
            .map_err(|e| SecurityError::Internal(format!("no randomness: {e}")))?;
        let salt = Salt {
            at: catalog::now(),
            salt: hex::encode(b),
        };
        // Whoever writes version 1 first sets the salt for good.
        catalog::try_write(lake, KIND, 0, &salt).await?;
    }
}

/// The mask functions of the lake `config` names, with the salt every
/// process of the lake shares (`security.mask_salt`, else the lake's own):
/// a cluster's executors compute the masks a server's session asked for.
pub async fn lake_masks(config: &Config, lake: &Lake) -> Result<Masks, SecurityError> {
    masks_of(config.security.mask_salt.expose().as_bytes(), lake).await
}

/// The mask functions with `salt`, or the lake's salt when it is empty.
async fn masks_of(salt: &[u8], lake: &Lake) -> Result<Masks, SecurityError> {
    if salt.is_empty() {
        Ok(Masks::new(&lake_salt(lake).await?))
    } else {
        Ok(Masks::new(salt))
    }
}

/// Where the audit journal lives: `security.audit.journal_dir`, else
/// `<lake>/_audit` for a lake on local disk, else a directory named after
/// the lake in the system temp dir.
pub fn journal_dir(config: &Config) -> PathBuf {
    match config.security.audit.journal_dir.trim() {
        "" => match crate::lake::to_url(&config.lake, true) {
            Ok(url) if url.scheme() == "file" => url
                .to_file_path()
                .map(|p| p.join("_audit"))
                .unwrap_or_else(|_| std::env::temp_dir().join("custlake-audit")),
            Ok(url) => {
                let name: String = format!("{}{}", url.host_str().unwrap_or(""), url.path())
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect();
                std::env::temp_dir().join(format!("custlake-audit-{}-{name}", url.scheme()))
            }
            Err(_) => std::env::temp_dir().join("custlake-audit"),
        },
        d => PathBuf::from(d),
    }
}

/// Everything a process needs to authenticate, authorise and audit.
pub struct Security {
    pub policy: Policy,
    /// The mask functions, made when a session first needs them (the
    /// salt may have to be read, or made, in the lake's catalog).
    masks: tokio::sync::OnceCell<Masks>,
    mask_salt: Vec<u8>,
    jwt: Option<jwt::JwtKey>,
    jwt_config: crate::config::JwtConfig,
    pub tokens: tokens::TokenCache,
    /// `None` when auditing is off.
    pub journal: Option<audit::Journal>,
    /// Where this process's statements run, when not here: every record
    /// says so (`token, on ballista http://host:port`).
    ran_on: Option<String>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("jwt", &self.jwt)
            .field("journal", &self.journal)
            .finish_non_exhaustive()
    }
}

impl Security {
    pub async fn open(config: &Config, _lake: &Lake) -> Result<Self, SecurityError> {
        let policy = Policy::from_config(config)?;
        let journal = if config.security.audit.enabled {
            Some(audit::Journal::open(audit::JournalDir::new(journal_dir(
                config,
            ))?))
        } else {
            None
        };
        Ok(Self {
            policy,
            masks: tokio::sync::OnceCell::new(),
            mask_salt: config.security.mask_salt.expose().as_bytes().to_vec(),
            jwt: jwt::key(&config.security.jwt)?,
            jwt_config: config.security.jwt.clone(),
            tokens: tokens::TokenCache::default(),
            journal,
            ran_on: match config.server.engine {
                crate::config::Engine::Local => None,
                crate::config::Engine::Ballista => Some(format!(
                    "on ballista {}",
                    config.server.scheduler_url.trim()
                )),
            },
        })
    }

    /// The principal a bearer credential stands for, now.
    pub async fn authenticate(
        &self,
        lake: &Lake,
        credential: &str,
    ) -> Result<Principal, SecurityError> {
        let credential = credential.trim();
        let principal = if credential.starts_with("cl_") {
            let set = self.tokens.get(lake).await?;
            tokens::verify(&set, credential, chrono::Utc::now())
                .map_err(|r| SecurityError::Unauthenticated(r.reason().into()))?
        } else if jwt::looks_like(credential) {
            let key = self.jwt.as_ref().ok_or_else(|| {
                SecurityError::Unauthenticated("this server does not accept JWTs".into())
            })?;
            jwt::verify(
                key,
                &self.jwt_config,
                credential,
                chrono::Utc::now().timestamp(),
            )
            .map_err(|r| SecurityError::Unauthenticated(r.reason()))?
        } else {
            return Err(SecurityError::Unauthenticated(
                tokens::Rejected::Malformed.reason().into(),
            ));
        };
        // A credential naming a role nobody configured, or the local
        // operator's, is no credential.
        if principal.role == LOCAL_ROLE {
            return Err(SecurityError::Unauthenticated(format!(
                "the role {LOCAL_ROLE:?} is the local command line's own; no credential carries it"
            )));
        }
        self.policy.role(&principal.role).map_err(|_| {
            SecurityError::Unauthenticated(format!(
                "the credential's role {:?} is not configured",
                principal.role
            ))
        })?;
        Ok(principal)
    }

    /// The mask functions of `lake` (its salt: `security.mask_salt`, else
    /// the lake's own, made on first use).
    pub async fn masks(&self, lake: &Lake) -> Result<&Masks, SecurityError> {
        self.masks
            .get_or_try_init(|| masks_of(&self.mask_salt, lake))
            .await
    }

    pub fn role(&self, principal: &Principal) -> Result<&Role, SecurityError> {
        self.policy.role(&principal.role)
    }

    /// Append an audit record (no-op when auditing is off); returns once
    /// it is durable.
    pub async fn audit(&self, mut record: audit::AuditRecord) -> Result<(), SecurityError> {
        if let Some(on) = &self.ran_on {
            record.via = Some(match record.via.take() {
                Some(via) => format!("{via}, {on}"),
                None => on.clone(),
            });
        }
        match &self.journal {
            Some(j) => j.record(record).await.map(|_| ()),
            None => Ok(()),
        }
    }
}
