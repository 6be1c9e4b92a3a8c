//! `GET /v1/tables` and `GET /v1/tables/{name}`: what the lake holds.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::{SharedState, json_response};
use crate::schema::TableDef;

async fn table_facts(state: &SharedState, def: &TableDef) -> Result<serde_json::Value, ApiError> {
    let table = state
        .warehouse
        .lake
        .open(def)
        .await
        .map_err(|e| ApiError::internal("opening a table", e))?;
    let (version, rows, files, last_change) = match &table {
        None => (None, 0i64, 0usize, None),
        Some(t) => {
            let snapshot = t
                .snapshot()
                .map_err(|e| ApiError::internal("reading a table", e))?;
            let files = snapshot.log_data().num_files();
            let ctx = crate::lake::session::write_context();
            let provider = t
                .table_provider()
                .await
                .map_err(|e| ApiError::internal("reading a table", e))?;
            let rows = ctx
                .read_table(provider)
                .map_err(|e| ApiError::internal("reading a table", e))?
                .count()
                .await
                .map_err(|e| ApiError::internal("counting rows", e))? as i64;
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
    Ok(serde_json::json!({
        "name": def.name,
        "description": def.description,
        "grain": def.grain,
        "key": def.key,
        "partitioned_by": def.partition.as_ref().map(|p| &p.column),
        "tiered": def.tiered,
        "exists": table.is_some(),
        "version": version,
        "rows": rows,
        "files": files,
        "last_change": last_change,
        "tiers": [{"tier": "hot", "range": "all"}],
    }))
}

pub(crate) async fn list(State(state): State<SharedState>) -> Response {
    let mut out = Vec::new();
    for def in &state.warehouse.catalog.tables {
        match table_facts(&state, def).await {
            Ok(v) => out.push(v),
            Err(e) => return e.into_response(),
        }
    }
    json_response(StatusCode::OK, &serde_json::json!({ "tables": out }))
}

pub(crate) async fn show(State(state): State<SharedState>, Path(name): Path<String>) -> Response {
    let Ok(def) = state.warehouse.catalog.table(&name) else {
        return ApiError::not_found(format!(
            "no table named {name:?}; GET /v1/tables lists them"
        ))
        .into_response();
    };
    let mut facts = match table_facts(&state, def).await {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let fields: Vec<serde_json::Value> = def
        .fields
        .iter()
        .map(|f| {
            serde_json::json!({
                "name": f.name,
                "type": f.ty.to_string(),
                "level": format!("{:?}", f.level),
                "mask": f.mask.to_string(),
                "system": f.system,
                "description": f.description,
            })
        })
        .collect();
    if let Some(obj) = facts.as_object_mut() {
        obj.insert("fields".into(), serde_json::Value::Array(fields));
    }
    json_response(StatusCode::OK, &facts)
}
