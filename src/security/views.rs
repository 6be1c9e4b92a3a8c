//! Secured views: for one principal, each table it may read as a view
//! over the raw table with its row filter and masks inside the view's
//! plan, registered under the table's own name in a context that holds
//! nothing else. No SQL run in that context can reach a raw column or a
//! filtered row: the raw tables are not in it.

use datafusion::common::Column;
use datafusion::prelude::{Expr, SessionContext, col};

use crate::config::Access;
use crate::schema::{Catalog, Level, TableDef};

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

/// Register in `user` the secured view of every table of `tables` (each
/// registered in `base`) that the principal's role reads. Returns the
/// names registered.
pub async fn secure(
    base: &SessionContext,
    user: &SessionContext,
    catalog: &Catalog,
    tables: &[String],
    principal: &Principal,
    role: &Role,
    masks: &Masks,
) -> Result<Vec<String>, SecurityError> {
    let mut out = Vec::new();
    for name in tables {
        if !role.reads(name) {
            continue;
        }
        let Ok(def) = catalog.table(name) else {
            continue;
        };
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
            continue;
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
                            .unwrap_or(datafusion::arrow::datatypes::DataType::Utf8);
                        match def.field(&c.name) {
                            Some(f) => masks.apply(&f.mask, &f.ty, column, &arrow),
                            None => masks.apply(
                                &crate::schema::Mask::Null,
                                &crate::schema::FieldType::String,
                                column,
                                &arrow,
                            ),
                        }
                    }
                };
                e.alias(c.name.as_str())
            })
            .collect();
        let view = df.select(exprs)?;
        user.register_table(name.as_str(), view.into_view())?;
        out.push(name.clone());
    }
    Ok(out)
}
