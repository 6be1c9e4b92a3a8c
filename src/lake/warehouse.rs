//! The warehouse one process works on, built once: its configuration, its
//! lake, the table declarations and the identity rules. The command line
//! and the server each hold one and hand it (or its parts) to the work.

use std::sync::Arc;

use super::{Lake, LakeError};
use crate::config::Config;
use crate::error::{Classify, ErrorKind};
use crate::progress::{Progress, Silent};
use crate::schema::rules::{Rules, RulesError};
use crate::schema::{Catalog, SchemaError};

/// Why a warehouse could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error(transparent)]
    Rules(#[from] RulesError),
}

impl Classify for OpenError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Lake(e) => e.kind(),
            Self::Schema(e) => e.kind(),
            Self::Rules(e) => e.kind(),
        }
    }
}

/// Configuration, lake, declarations and rules, shared.
#[derive(Clone)]
pub struct Warehouse {
    pub config: Arc<Config>,
    pub lake: Lake,
    pub catalog: Arc<Catalog>,
    pub rules: Arc<Rules>,
    pub progress: Arc<dyn Progress>,
}

impl std::fmt::Debug for Warehouse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Warehouse")
            .field("lake", &self.lake)
            .finish_non_exhaustive()
    }
}

impl Warehouse {
    /// Open the warehouse `config` describes, with the shipped declarations
    /// and identity rules, reporting to `progress`.
    pub fn open(config: Config, progress: Arc<dyn Progress>) -> Result<Self, OpenError> {
        let lake = Lake::new(&config)?.with_progress(progress.clone());
        Ok(Self {
            config: Arc::new(config),
            lake,
            catalog: Arc::new(Catalog::embedded()?),
            rules: Arc::new(Rules::default_rules()?),
            progress,
        })
    }

    /// [`Warehouse::open`] with nothing reported (tests, tools).
    pub fn quiet(config: Config) -> Result<Self, OpenError> {
        Self::open(config, Arc::new(Silent))
    }

    /// The same warehouse with other identity rules.
    pub fn with_rules(mut self, rules: Rules) -> Self {
        self.rules = Arc::new(rules);
        self
    }

    /// The same warehouse naming this process `holder` in table leases.
    pub fn with_holder(mut self, holder: impl Into<String>) -> Self {
        self.lake = self.lake.with_holder(holder);
        self
    }
}
