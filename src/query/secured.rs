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

use super::current::LakeSchema;
use super::{QueryError, TableCache, context_on};
use crate::schema::TableDef;

/// The tables row filters may consult although the role does not read
/// them itself (they stay in the private context).
const FILTER_TABLES: [&str; 3] = ["customer", "customer_xref", "list_line"];

/// Where the lake's tables come from.
#[derive(Clone, Copy)]
pub enum Tables<'a> {
    /// As they are now, through a server's cache.
    Cached(&'a Arc<TableCache>),
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
            // Only what a statement names is brought up to date: a lookup
            // checks one table for new commits, not every table.
            let defs: Vec<TableDef> = catalog
                .tables
                .iter()
                .filter(|d| role.reads(&d.name) || FILTER_TABLES.contains(&d.name.as_str()))
                .cloned()
                .collect();
            let raw = defs
                .iter()
                .filter(|d| role.reads(&d.name))
                .map(|d| d.name.clone())
                .collect();
            let schema = LakeSchema::new(lake, defs, cache.clone(), runtime.clone());
            base.catalog("datafusion")
                .ok_or_else(|| QueryError::Internal("the session has no default catalog".into()))?
                .register_schema("public", Arc::new(schema))?;
            raw
        }
        Tables::AsOf(as_of) => {
            let names = super::register_tables(
                &base,
                lake,
                catalog,
                as_of,
                crate::lake::session::Text::Plain,
                None,
            )
            .await?;
            // A filter table the lake does not have yet (no list was ever
            // made) is there, empty, so the filters that consult it still
            // plan.
            for extra in FILTER_TABLES {
                if !base.table_exist(extra)? {
                    let def = catalog
                        .table(extra)
                        .map_err(|e| QueryError::Internal(e.to_string()))?;
                    super::register_empty(&base, def)?;
                }
            }
            // A declared table the lake does not hold yet (no scores were
            // ever computed, no list made) reads as empty, not as "not
            // found": the named queries over it answer with no rows.
            let mut raw = names;
            for def in &catalog.tables {
                if role.reads(&def.name)
                    && !raw.contains(&def.name)
                    && !base.table_exist(&def.name)?
                {
                    super::register_empty(&base, def)?;
                    raw.push(def.name.clone());
                }
            }
            raw
        }
    };
    let user = context_on(config, runtime);
    // On a cluster only the planner differs: the same secured views, the
    // plan sent whole (see `super::cluster`).
    let user = match config.server.engine {
        crate::config::Engine::Local => user,
        crate::config::Engine::Ballista => {
            super::cluster::attach(user, &config.server.scheduler_url)?
        }
    };
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
