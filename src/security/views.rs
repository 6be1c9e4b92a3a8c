//! Secured views: for one principal, each table it may read as a view
//! over the raw table with its row filter and masks inside the view's
//! plan, registered under the table's own name in a context that holds
//! nothing else. No SQL run in that context can reach a raw column or a
//! filtered row: the raw tables are not in it.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::common::Column;
use datafusion::error::DataFusionError;
use datafusion::prelude::{Expr, SessionContext, col};

use crate::config::Access;
use crate::schema::{Catalog, FieldType, Level, Mask, TableDef};

use super::mask::Masks;
use super::policy::Role;
use super::{Principal, SecurityError};

/// What one column of a secured view shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnAccess {
    pub name: String,
    pub access: Access,
}

/// The columns of `def` a role sees and how (absent ones left out); the
/// columns of the stored table that `def` does not declare are L4.
pub fn columns(role: &Role, def: &TableDef, stored: &[String]) -> Vec<ColumnAccess> {
    stored
        .iter()
        .filter_map(|name| {
            let level = def.field(name).map_or(Level::L4, |f| f.level);
            let access = role.access(&def.name, name, level);
            (access != Access::Absent).then(|| ColumnAccess {
                name: name.clone(),
                access,
            })
        })
        .collect()
}

/// A secured view: `SELECT <masked columns> FROM <table> AS t WHERE
/// <row filter>` over the raw table registered in `base`.
async fn view(
    base: &SessionContext,
    def: &TableDef,
    principal: &Principal,
    role: &Role,
    masks: &Masks,
) -> Result<Option<Arc<dyn TableProvider>>, SecurityError> {
    let name = &def.name;
    let filter = role.row_filter(name).map(|f| principal.render(f));
    let sql = match &filter {
        Some(f) => format!("SELECT * FROM {name} AS t WHERE {f}"),
        None => format!("SELECT * FROM {name} AS t"),
    };
    let df = base.sql(&sql).await.map_err(|e| {
        SecurityError::Config(format!("roles.{}.row_filters for {name}: {e}", role.name))
    })?;
    let schema = df.schema().clone();
    let stored: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let visible = columns(role, def, &stored);
    if visible.is_empty() {
        return Ok(None);
    }
    let exprs: Vec<Expr> = visible
        .iter()
        .map(|c| {
            let column = col(Column::new(Some("t"), c.name.as_str()));
            let e = match c.access {
                Access::Clear | Access::Absent => column,
                Access::Masked => {
                    let arrow = schema
                        .field_with_unqualified_name(&c.name)
                        .map(|f| f.data_type().clone())
                        .unwrap_or(DataType::Utf8);
                    match def.field(&c.name) {
                        Some(f) => masks.apply(&f.mask, &f.ty, column, &arrow),
                        None => masks.apply(&Mask::Null, &FieldType::String, column, &arrow),
                    }
                }
            };
            e.alias(c.name.as_str())
        })
        .collect();
    Ok(Some(df.select(exprs)?.into_view()))
}

/// The principal's schema: the secured view of each table its role reads
/// (and the golden views over them), built when a statement first names
/// it, so a statement pays only for the tables it reads. It replaces the
/// default schema of the principal's context; the raw tables stay in
/// `base`, which the principal's context does not hold.
pub struct SecuredSchema {
    base: SessionContext,
    tables: Vec<TableDef>,
    /// `customer_<fact>` views: (view, fact).
    golden: Vec<(String, String)>,
    principal: Principal,
    role: Role,
    masks: Masks,
    built: tokio::sync::Mutex<HashMap<String, Option<Arc<dyn TableProvider>>>>,
}

impl std::fmt::Debug for SecuredSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecuredSchema")
            .field("principal", &self.principal.user)
            .field("role", &self.role.name)
            .field("tables", &self.table_names())
            .finish_non_exhaustive()
    }
}

impl SecuredSchema {
    /// The schema of `principal` over the tables of `raw` (each registered
    /// in `base`) that its role reads, and the golden views `golden`
    /// names ((view, fact) pairs, each over its fact and `customer_xref`).
    pub fn new(
        base: SessionContext,
        catalog: &Catalog,
        raw: &[String],
        golden: &[(&str, &str)],
        principal: &Principal,
        role: &Role,
        masks: &Masks,
    ) -> Self {
        let tables: Vec<TableDef> = catalog
            .tables
            .iter()
            .filter(|d| role.reads(&d.name) && raw.contains(&d.name))
            .cloned()
            .collect();
        let has = |n: &str| tables.iter().any(|d| d.name == n);
        let golden = golden
            .iter()
            .filter(|(view, fact)| role.reads(view) && has(fact) && has("customer_xref"))
            .map(|(v, f)| (v.to_string(), f.to_string()))
            .collect();
        Self {
            base,
            tables,
            golden,
            principal: principal.clone(),
            role: role.clone(),
            masks: masks.clone(),
            built: Default::default(),
        }
    }

    async fn build(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, SecurityError> {
        if let Some(def) = self.tables.iter().find(|d| d.name == name) {
            return view(&self.base, def, &self.principal, &self.role, &self.masks).await;
        }
        let Some((_, fact)) = self.golden.iter().find(|(v, _)| v == name) else {
            return Ok(None);
        };
        // Over the secured fact and the secured cross-reference, so the
        // golden view is masked and filtered as they are.
        let (Some(f), Some(x)) = (
            Box::pin(self.secured(fact)).await?,
            Box::pin(self.secured("customer_xref")).await?,
        ) else {
            return Ok(None);
        };
        let scratch = SessionContext::new_with_state(self.base.state());
        scratch.register_table("secured_fact", f)?;
        scratch.register_table("secured_xref", x)?;
        let df = scratch
            .sql(
                "SELECT x.customer_id, f.* FROM secured_fact f LEFT JOIN secured_xref x \
                 ON x.source_system = f.source_system AND x.source_id = f.source_customer_id",
            )
            .await?;
        Ok(Some(df.into_view()))
    }

    /// The secured view of `name` (built once per session).
    async fn secured(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, SecurityError> {
        let mut built = self.built.lock().await;
        if let Some(t) = built.get(name) {
            return Ok(t.clone());
        }
        drop(built);
        let t = self.build(name).await?;
        built = self.built.lock().await;
        built.insert(name.to_string(), t.clone());
        Ok(t)
    }
}

#[async_trait::async_trait]
impl SchemaProvider for SecuredSchema {
    fn table_names(&self) -> Vec<String> {
        self.tables
            .iter()
            .map(|d| d.name.clone())
            .chain(self.golden.iter().map(|(v, _)| v.clone()))
            .collect()
    }

    async fn table(&self, name: &str) -> datafusion::error::Result<Option<Arc<dyn TableProvider>>> {
        self.secured(name)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.tables.iter().any(|d| d.name == name) || self.golden.iter().any(|(v, _)| v == name)
    }
}
