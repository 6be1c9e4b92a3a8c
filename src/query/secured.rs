//! The one place a principal's session is built, for every path (HTTP,
//! the CLI, lineage, suspects, named queries): the lake's tables go into
//! a private context, and the principal's context receives only the
//! secured views of them (see [`crate::security::secure`]) and the golden
//! views built on those.

use std::sync::Arc;

use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::prelude::SessionContext;

use crate::config::Config;
use crate::lake::{AsOf, Lake};
use crate::schema::Catalog;
use crate::security::{Principal, Security};

use super::{QueryError, TableCache, context_on};

/// The tables row filters may consult although the role does not read
/// them itself (they stay in the private context).
const FILTER_TABLES: [&str; 3] = ["customer", "customer_xref", "list_line"];

/// Where the lake's tables come from.
#[derive(Clone, Copy)]
pub enum Tables<'a> {
    /// As they are now, through a server's cache.
    Cached(&'a TableCache),
    /// As they are now (`None`) or were then.
    AsOf(Option<&'a AsOf>),
}

/// A principal's context and the names of the tables and views in it.
pub struct Secured {
    pub ctx: SessionContext,
    pub names: Vec<String>,
}

/// Build the session of `principal`.
#[allow(clippy::too_many_arguments)]
pub async fn secured(
    config: &Config,
    runtime: Arc<RuntimeEnv>,
    lake: &Lake,
    catalog: &Catalog,
    tables: Tables<'_>,
    security: &Security,
    principal: &Principal,
) -> Result<Secured, QueryError> {
    let role = security.role(principal)?;
    let base = context_on(config, runtime.clone());
    let raw = match tables {
        Tables::Cached(cache) => {
            let mut names = Vec::new();
            for def in &catalog.tables {
                if role.reads(&def.name) && cache.register(&base, lake, def).await? {
                    names.push(def.name.clone());
                }
            }
            // Row filters may consult the customer tables the role does
            // not read itself (they stay in the private context).
            for extra in FILTER_TABLES {
                if !names.iter().any(|n| n == extra) {
                    cache
                        .register(
                            &base,
                            lake,
                            catalog
                                .table(extra)
                                .map_err(|e| QueryError::Internal(e.to_string()))?,
                        )
                        .await?;
                }
            }
            names
        }
        Tables::AsOf(as_of) => super::register_tables(&base, lake, catalog, as_of).await?,
    };
    // A filter table the lake does not have yet (no list was ever made) is
    // there, empty, so the filters that consult it still plan.
    for extra in FILTER_TABLES {
        if !base.table_exist(extra)? {
            let def = catalog
                .table(extra)
                .map_err(|e| QueryError::Internal(e.to_string()))?;
            super::register_empty(&base, def)?;
        }
    }
    // A declared table the lake does not hold yet (no scores were ever
    // computed, no list made) reads as empty, not as "not found": the
    // named queries over it answer with no rows.
    let mut raw = raw;
    for def in &catalog.tables {
        if role.reads(&def.name) && !raw.contains(&def.name) && !base.table_exist(&def.name)? {
            super::register_empty(&base, def)?;
            raw.push(def.name.clone());
        }
    }
    let user = context_on(config, runtime);
    let schema = crate::security::SecuredSchema::new(
        base,
        catalog,
        &raw,
        &super::GOLDEN_VIEWS,
        principal,
        role,
        security.masks(lake).await?,
    );
    let names = datafusion::catalog::SchemaProvider::table_names(&schema);
    let default = user
        .catalog("datafusion")
        .ok_or_else(|| QueryError::Internal("the session has no default catalog".into()))?;
    default.register_schema("public", std::sync::Arc::new(schema))?;
    Ok(Secured { ctx: user, names })
}
