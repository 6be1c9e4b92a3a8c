//! `GET /v1/tables` and `GET /v1/tables/{name}`: what the lake holds.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::SharedState;
use super::auth::Caller;
use super::docs::ReadProblems;
use super::error::ApiError;
use super::extract::PathParams;
use std::collections::HashMap;

use deltalake::DeltaTable;

use crate::schema::TableDef;

/// A table: its declaration and what the lake holds of it.
#[derive(Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct TableFacts {
    name: String,
    description: String,
    grain: String,
    key: Vec<String>,
    partitioned_by: Option<String>,
    tiered: bool,
    /// False until something was written to it.
    exists: bool,
    /// The Delta version of its hot part.
    #[schema(minimum = 0)]
    version: Option<u64>,
    #[schema(minimum = 0)]
    rows: u64,
    #[schema(minimum = 0)]
    files: u64,
    /// RFC 3339 time of the last commit.
    last_change: Option<String>,
    tiers: Vec<TierRange>,
    /// The fields (one table only).
    #[serde(skip_serializing_if = "Option::is_none")]
    fields: Option<Vec<FieldFacts>>,
}

/// A tier and the range it holds.
#[derive(Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct TierRange {
    tier: String,
    range: String,
}

/// A field's declaration.
#[derive(Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct FieldFacts {
    name: String,
    #[serde(rename = "type")]
    ty: String,
    /// Sensitivity, `L1` public to `L4` secret.
    level: String,
    mask: String,
    /// Filled by the warehouse.
    system: bool,
    description: String,
    /// What the caller's role sees of it: `clear` or `masked` (fields it
    /// may not see are not listed).
    access: String,
}

/// Every table.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Tables {
    tables: Vec<TableFacts>,
}

/// A Delta error reading `def`'s table, for the client.
fn delta_error(def: &TableDef, e: deltalake::DeltaTableError) -> ApiError {
    ApiError::from_error(
        "reading a table",
        &crate::lake::LakeError::Delta {
            table: def.name.clone(),
            source: Box::new(e),
        },
    )
}

/// Each table's facts with the Delta table they were read from: a call
/// applies the table's newer commits (if any) and reuses the facts while
/// the version is unchanged, instead of opening every table on every call.
#[derive(Default)]
pub(crate) struct FactsCache(tokio::sync::Mutex<HashMap<String, (DeltaTable, TableFacts)>>);

async fn table_facts(state: &SharedState, def: &TableDef) -> Result<TableFacts, ApiError> {
    let on = |e| delta_error(def, e);
    let mut cache = state.facts.0.lock().await;
    if let Some((table, facts)) = cache.get_mut(&def.name) {
        let before = table.version();
        let updated = table.update_incremental(None).await;
        if let Err(e) = updated {
            cache.remove(&def.name);
            return Err(on(e));
        }
        if table.version() == before {
            return Ok(facts.clone());
        }
        let fresh = read_facts(def, Some(&*table)).await?;
        *facts = fresh.clone();
        return Ok(fresh);
    }
    let table = state
        .warehouse
        .lake
        .open(def)
        .await
        .map_err(|e| ApiError::from_error("opening a table", &e))?;
    let facts = read_facts(def, table.as_ref()).await?;
    if let Some(t) = table {
        cache.insert(def.name.clone(), (t, facts.clone()));
    }
    Ok(facts)
}

/// A table's facts from its Delta state (`None`: not created yet).
async fn read_facts(def: &TableDef, table: Option<&DeltaTable>) -> Result<TableFacts, ApiError> {
    let (version, rows, files, last_change) = match table {
        None => (None, 0, 0, None),
        Some(t) => {
            let on = |e| delta_error(def, e);
            let snapshot = t.snapshot().map_err(on)?;
            let log = snapshot.snapshot().try_log_data().map_err(on)?;
            let files = log.num_files() as u64;
            // Rows from the log's file statistics, where every file has
            // them (custlake's writers always write them); otherwise
            // counted.
            let counts: Option<u64> = log.iter().map(|f| f.num_records().map(|n| n as u64)).sum();
            let rows = match counts {
                Some(n) => n,
                None => {
                    let df_err = |e| {
                        ApiError::from_error(
                            "counting rows",
                            &crate::lake::LakeError::query(&def.name, e),
                        )
                    };
                    let ctx = crate::lake::session::write_context();
                    t.update_datafusion_session(&ctx.state()).map_err(on)?;
                    let provider = t.table_provider().await.map_err(df_err)?;
                    ctx.read_table(provider)
                        .map_err(df_err)?
                        .count()
                        .await
                        .map_err(df_err)? as u64
                }
            };
            let last = {
                use futures::StreamExt;
                let mut h = t.history(Some(1));
                h.next()
                    .await
                    .and_then(|c| c.ok())
                    .and_then(|c| c.timestamp)
                    .and_then(chrono::DateTime::from_timestamp_millis)
                    .map(|d| d.to_rfc3339())
            };
            (t.version(), rows, files, last)
        }
    };
    Ok(TableFacts {
        name: def.name.clone(),
        description: def.description.clone(),
        grain: def.grain.clone(),
        key: def.key.clone(),
        partitioned_by: def.partition.as_ref().map(|p| p.column.clone()),
        tiered: def.tiered,
        exists: table.is_some(),
        version,
        rows,
        files,
        last_change,
        tiers: vec![TierRange {
            tier: "hot".into(),
            range: "all".into(),
        }],
        fields: None,
    })
}

/// Each table's description, key, partitioning, version, rows, files and
/// last change.
#[utoipa::path(
    get,
    path = "/v1/tables",
    operation_id = "list_tables",
    tag = "tables",
    responses((status = 200, description = "Every table", body = Tables), ReadProblems)
)]
pub(crate) async fn list(
    State(state): State<SharedState>,
    caller: Caller,
) -> Result<Json<Tables>, ApiError> {
    let role = caller.role(&state)?;
    let mut tables = Vec::new();
    for def in &state.warehouse.catalog.tables {
        if !role.reads(&def.name) {
            continue;
        }
        tables.push(table_facts(&state, def).await?);
    }
    Ok(Json(Tables { tables }))
}

/// The path of a table.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct TableName {
    /// The table's name (`GET /v1/tables` lists them).
    name: String,
}

/// One table, with its fields' types, sensitivity levels and masks.
#[utoipa::path(
    get,
    path = "/v1/tables/{name}",
    operation_id = "show_table",
    tag = "tables",
    params(TableName),
    responses((status = 200, description = "The table", body = TableFacts), ReadProblems)
)]
pub(crate) async fn show(
    State(state): State<SharedState>,
    caller: Caller,
    PathParams(TableName { name }): PathParams<TableName>,
) -> Result<Json<TableFacts>, ApiError> {
    let role = caller.role(&state)?;
    let def = state
        .warehouse
        .catalog
        .table(&name)
        .ok()
        .filter(|d| role.reads(&d.name))
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no table named {name:?}; GET /v1/tables lists them"
            ))
        })?;
    let mut facts = table_facts(&state, def).await?;
    facts.fields = Some(
        def.fields
            .iter()
            .filter_map(|f| {
                let access = role.access(&def.name, &f.name, f.level);
                (access != crate::config::Access::Absent).then_some((f, access))
            })
            .map(|(f, access)| FieldFacts {
                access: format!("{access:?}").to_lowercase(),
                name: f.name.clone(),
                ty: f.ty.to_string(),
                level: format!("{:?}", f.level),
                mask: f.mask.to_string(),
                system: f.system,
                description: f.description.clone(),
            })
            .collect(),
    );
    Ok(Json(facts))
}
