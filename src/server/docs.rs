//! The OpenAPI document's shared parts: the result formats, the problem
//! responses each family of routes can give, the format parameter, and the
//! document itself. Every route's own part is generated from its handler
//! (`#[utoipa::path]`) and its request and response types.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::{ContentBuilder, Ref, RefOr};
use utoipa::{IntoParams, IntoResponses, ToSchema};

use super::error::status_of;
use crate::error::ErrorKind;

/// A result format's name.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum FormatName {
    Json,
    Ndjson,
    Csv,
    Arrow,
    Parquet,
}

/// `?format=`: the result format (it wins over `Accept`).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct FormatQuery {
    /// `json` (default), `ndjson`, `csv`, `arrow` (Arrow IPC stream) or
    /// `parquet`; without it the `Accept` header decides.
    #[param(value_type = Option<FormatName>)]
    pub(crate) format: Option<String>,
}

/// One column of a JSON result.
#[derive(Serialize, ToSchema)]
pub(crate) struct ResultColumn {
    name: String,
    /// The Arrow type, e.g. `Utf8`, `Int64`, `Decimal128(18, 2)`.
    #[serde(rename = "type")]
    ty: String,
}

/// A result as JSON.
#[derive(Serialize, ToSchema)]
pub(crate) struct QueryResult {
    columns: Vec<ResultColumn>,
    /// One object per row, by column name.
    rows: Vec<serde_json::Map<String, serde_json::Value>>,
    #[schema(minimum = 0)]
    row_count: u64,
    /// True when more rows exist than the row limit let through.
    truncated: bool,
}

/// The values a statement's parameters may take: text, numbers, booleans
/// or null.
pub(crate) fn param_values() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(ObjectBuilder::new().schema_type(
            SchemaType::from_iter([Type::String, Type::Number, Type::Boolean, Type::Null]),
        )))
}

fn text() -> RefOr<Schema> {
    ObjectBuilder::new().schema_type(Type::String).into()
}

fn binary() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .content_media_type("application/octet-stream")
        .into()
}

/// A 200 with a result in any of the formats.
pub(crate) struct ResultFormats;

impl IntoResponses for ResultFormats {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let ok = ResponseBuilder::new()
            .description(
                "The result, streamed in the format asked for. `Custlake-Row-Limit` gives the \
                 row limit applied; `Custlake-Truncated` is `true` when the result was cut at \
                 it and `false` when it is whole. A result still streaming past the first 4 MiB \
                 when the headers go out announces `Trailer: Custlake-Truncated` and sends it \
                 as a trailer after the body, to clients that sent `TE: trailers` (JSON's \
                 `truncated` says it in the body too). A \
                 result that stops early (timeout, error) ends with an aborted transfer, never \
                 as a complete reply.",
            )
            .header(
                "Custlake-Row-Limit",
                utoipa::openapi::HeaderBuilder::new()
                    .schema(Some(ObjectBuilder::new().schema_type(Type::Integer)))
                    .description(Some("The row limit the result was cut at"))
                    .build(),
            )
            .header(
                "Custlake-Truncated",
                utoipa::openapi::HeaderBuilder::new()
                    .schema(Some(ObjectBuilder::new().schema_type(Type::Boolean)))
                    .description(Some(
                        "Whether the result was cut at the row limit (a trailer for results past 4 MiB)",
                    ))
                    .build(),
            )
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("QueryResult")))
                    .build(),
            )
            .content(
                "application/x-ndjson",
                ContentBuilder::new().schema(Some(text())).build(),
            )
            .content(
                "text/csv",
                ContentBuilder::new().schema(Some(text())).build(),
            )
            .content(
                "application/vnd.apache.arrow.stream",
                ContentBuilder::new().schema(Some(binary())).build(),
            )
            .content(
                "application/vnd.apache.parquet",
                ContentBuilder::new().schema(Some(binary())).build(),
            )
            .build();
        BTreeMap::from([("200".to_string(), ok.into())])
    }
}

/// Problem responses for these kinds (statuses shared by several kinds
/// are described once).
fn problems(kinds: &[ErrorKind]) -> BTreeMap<String, RefOr<Response>> {
    let mut by_status: BTreeMap<u16, Vec<ErrorKind>> = BTreeMap::new();
    for k in kinds {
        by_status
            .entry(status_of(*k).as_u16())
            .or_default()
            .push(*k);
    }
    by_status
        .into_iter()
        .map(|(status, kinds)| {
            let what: Vec<String> = kinds
                .iter()
                .map(|k| format!("{} ({})", k.title(), k.code()))
                .collect();
            let mut r = ResponseBuilder::new().description(what.join("; ")).content(
                "application/problem+json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            );
            if matches!(status, 429 | 503) {
                r = r.header(
                    "Retry-After",
                    HeaderBuilder::new()
                        .schema(Some(
                            ObjectBuilder::new()
                                .schema_type(Type::Integer)
                                .minimum(Some(0)),
                        ))
                        .description(Some("Seconds to wait before trying again"))
                        .build(),
                );
            }
            (status.to_string(), r.build().into())
        })
        .collect()
}

macro_rules! problem_set {
    ($name:ident, $doc:literal, [$($kind:ident),* $(,)?]) => {
        #[doc = $doc]
        pub(crate) struct $name;

        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                problems(&[$(ErrorKind::$kind),*])
            }
        }
    };
}

problem_set!(
    QueryProblems,
    "What a query can fail with.",
    [
        InvalidParameter,
        MalformedBody,
        UnsupportedFormat,
        InvalidSql,
        NotReadOnly,
        NotAcceptable,
        BodyTooLarge,
        TooManyRequests,
        ResourcesExhausted,
        StorageUnavailable,
        Timeout,
    ]
);

problem_set!(
    NamedProblems,
    "What a named query can fail with.",
    [
        InvalidParameter,
        MalformedBody,
        UnsupportedFormat,
        InvalidSql,
        NotFound,
        NotAcceptable,
        BodyTooLarge,
        TooManyRequests,
        ResourcesExhausted,
        StorageUnavailable,
        Timeout,
    ]
);

problem_set!(
    ReadProblems,
    "What reading the lake can fail with.",
    [InvalidParameter, NotFound, StorageUnavailable]
);

problem_set!(
    DecisionProblems,
    "What a steward's decision can fail with.",
    [
        InvalidParameter,
        MalformedBody,
        NotFound,
        Conflict,
        BodyTooLarge,
        StorageUnavailable,
    ]
);

problem_set!(
    ListProblems,
    "What producing or reading a list can fail with.",
    [
        InvalidParameter,
        UnsupportedFormat,
        NotFound,
        NotAcceptable,
        Refused,
        TooManyRequests,
        Busy,
        StorageUnavailable,
        Timeout,
    ]
);

problem_set!(
    ReportProblems,
    "What reading a stored report can fail with.",
    [
        InvalidParameter,
        UnsupportedFormat,
        NotFound,
        StorageUnavailable
    ]
);

problem_set!(
    ReadyProblems,
    "The lake cannot be reached.",
    [StorageUnavailable]
);

/// The document's frame: title, version, tags, the shared schemas.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "custlake",
        description = "SQL, named queries, tables and golden customers of an analytical customer warehouse. Every error is application/problem+json with a stable code (see the README).",
    ),
    components(schemas(super::error::Problem, QueryResult, ResultColumn, FormatName, super::reports::ReportFormat)),
    tags(
        (name = "query", description = "Read-only SQL and named queries"),
        (name = "tables", description = "What the lake holds"),
        (name = "customers", description = "Golden customers, suspects and steward decisions"),
        (name = "lists", description = "Renewal, cross-sell and churn lists: produced, stored as runs, read again"),
        (name = "reports", description = "The monthly report pack, as stored per period (HTML with charts, CSV, JSON)"),
        (name = "jobs", description = "The scheduled jobs and their runs"),
        (name = "service", description = "Health, readiness, metrics and this document"),
    )
)]
pub(crate) struct ApiDoc;

/// utoipa writes an unsigned integer as `format: int32` (or `int64`) with
/// `minimum: 0`, which tells a client the signed type's maximum; the server
/// reads such a value as unsigned and takes up to twice as much. Say the
/// unsigned range instead.
fn unsigned_ranges(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(o) => {
            let unsigned = o.get("minimum").and_then(|m| m.as_u64()) == Some(0);
            let max = match o.get("format").and_then(|f| f.as_str()) {
                Some("int32") if unsigned => Some(serde_json::json!(u32::MAX)),
                Some("int64") if unsigned => Some(serde_json::json!(u64::MAX)),
                _ => None,
            };
            if let Some(max) = max {
                o.remove("format");
                o.entry("maximum").or_insert(max);
            }
            o.values_mut().for_each(unsigned_ranges);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(unsigned_ranges),
        _ => {}
    }
}

/// Put this server's bounds on every `limit` and `timeout_ms` (query
/// parameters and body properties): what the server accepts is exactly
/// what the document allows.
pub(crate) fn apply_bounds(doc: &mut serde_json::Value, server: &crate::config::ServerConfig) {
    unsigned_ranges(doc);
    // What the handlers' types cannot say: a decision names each customer
    // or record once.
    for (schema, list) in [("MergeRequest", "customers"), ("SplitRequest", "records")] {
        if let Some(p) = doc.pointer_mut(&format!("/components/schemas/{schema}/properties/{list}"))
        {
            p["uniqueItems"] = serde_json::json!(true);
        }
    }
    let bound = |schema: &mut serde_json::Value, name: &str| {
        let (min, max) = match name {
            "limit" => (0, server.max_row_limit as u64),
            "timeout_ms" => (
                server.min_query_timeout_ms.max(1),
                server.max_query_timeout_ms,
            ),
            _ => return,
        };
        if let Some(o) = schema.as_object_mut() {
            o.insert("minimum".into(), min.into());
            o.insert("maximum".into(), max.into());
            o.remove("format");
        }
    };
    // Parameters and body properties named `limit` or `timeout_ms`,
    // anywhere below `v`.
    fn walk(v: &mut serde_json::Value, bound: &dyn Fn(&mut serde_json::Value, &str)) {
        match v {
            serde_json::Value::Object(o) => {
                if let Some(name) = o.get("name").and_then(|n| n.as_str()).map(str::to_string)
                    && let Some(s) = o.get_mut("schema")
                {
                    bound(s, &name);
                }
                if let Some(props) = o.get_mut("properties").and_then(|p| p.as_object_mut()) {
                    for (name, s) in props.iter_mut() {
                        bound(s, name);
                    }
                }
                for child in o.values_mut() {
                    walk(child, bound);
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(|c| walk(c, bound)),
            _ => {}
        }
    }
    if let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) {
        for (_, item) in paths
            .iter_mut()
            .filter(|(path, _)| path.starts_with("/v1/quer") || path.starts_with("/v1/lists"))
        {
            walk(item, &bound);
        }
    }
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(|s| s.as_object_mut())
    {
        for (_, s) in schemas
            .iter_mut()
            .filter(|(name, _)| matches!(name.as_str(), "QueryRequest" | "RunRequest"))
        {
            walk(s, &bound);
        }
    }
}

/// A whole number given as JSON, also as `8237.0`: JSON Schema's
/// `integer` allows a zero fraction, so the server does too.
pub(crate) fn whole<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    use serde::de::Error;
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    if let Some(u) = n.as_u64() {
        return Ok(Some(u));
    }
    match n.as_f64() {
        Some(f) if f >= 0.0 && f.fract() == 0.0 && f <= u64::MAX as f64 => Ok(Some(f as u64)),
        _ => Err(D::Error::custom(format!(
            "{n} is not a whole number of 0 or more"
        ))),
    }
}

/// The JSON Schema of a named query's parameter.
fn param_schema(p: &crate::query::named::Param) -> serde_json::Value {
    use crate::query::named::ParamType;
    // A value may also come as its text (`"30"` for 30), as a query
    // string gives it.
    let mut s = match (p.ty, p.range) {
        (ParamType::String, _) => serde_json::json!({"type": ["string", "number", "boolean"]}),
        (ParamType::Int, Some((lo, hi))) => {
            serde_json::json!({"type": "integer", "minimum": lo, "maximum": hi})
        }
        (ParamType::Int, None) => serde_json::json!({"anyOf": [
            // What a 64-bit integer holds, with room for the SQL's arithmetic.
            {"type": "integer", "minimum": -(1i64 << 52), "maximum": 1i64 << 52},
            {"type": "string", "pattern": "^-?[0-9]{1,15}$"},
        ]}),
        (ParamType::Float, Some((lo, hi))) => {
            serde_json::json!({"type": "number", "minimum": lo, "maximum": hi})
        }
        (ParamType::Float, None) => serde_json::json!({"anyOf": [
            {"type": "number"},
            {"type": "string", "pattern": "^-?[0-9]{1,15}(\\.[0-9]{1,15})?$"},
        ]}),
        (ParamType::Bool, _) => serde_json::json!({"anyOf": [
            {"type": "boolean"},
            {"type": "string", "enum": ["true", "false"]},
        ]}),
        (ParamType::Date, _) => serde_json::json!({"anyOf": [
            {"type": "string", "format": "date"},
            {"type": "string", "const": "today"},
        ]}),
    };
    if let Some(d) = &p.default {
        s["description"] = serde_json::json!(format!("default: {d}"));
    }
    s
}

/// One path per named query (`/v1/queries/customer_lookup`, ...), each
/// with its own parameters, typed: GET takes them in the query string,
/// POST in the body's `params`. They replace the generic
/// `/v1/queries/{name}` in the document (the route stays, and answers 404
/// for a name that is not a named query).
pub(crate) fn named_paths(doc: &mut serde_json::Value, named: &[crate::query::named::NamedQuery]) {
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    let Some(generic) = paths.remove("/v1/queries/{name}") else {
        return;
    };
    for q in named {
        let mut item = generic.clone();
        let roles = if q.roles.is_empty() {
            String::new()
        } else {
            format!(" Roles: {}.", q.roles.join(", "))
        };
        if let Some(get) = item.get_mut("get") {
            get["operationId"] = serde_json::json!(format!("named_{}", q.name));
            get["summary"] = serde_json::json!(q.description);
            get["description"] = serde_json::json!(format!(
                "{} (parameters in the query string).{roles}",
                q.description
            ));
            if let Some(params) = get.get_mut("parameters").and_then(|p| p.as_array_mut()) {
                params.retain(|p| p["in"] != "path");
                for p in &q.params {
                    params.push(serde_json::json!({
                        "name": p.name,
                        "in": "query",
                        "required": p.default.is_none(),
                        "schema": param_schema(p),
                    }));
                }
            }
        }
        if let Some(post) = item.get_mut("post") {
            post["operationId"] = serde_json::json!(format!("named_{}_with_body", q.name));
            post["summary"] = serde_json::json!(q.description);
            post["description"] = serde_json::json!(format!(
                "{} (parameters in the body).{roles}",
                q.description
            ));
            if let Some(params) = post.get_mut("parameters").and_then(|p| p.as_array_mut()) {
                params.retain(|p| p["in"] != "path");
            }
            let properties: serde_json::Map<String, serde_json::Value> = q
                .params
                .iter()
                .map(|p| (p.name.clone(), param_schema(p)))
                .collect();
            let required: Vec<&str> = q
                .params
                .iter()
                .filter(|p| p.default.is_none())
                .map(|p| p.name.as_str())
                .collect();
            let mut body = serde_json::json!({
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "params": {
                        "type": "object",
                        "additionalProperties": false,
                        "properties": properties,
                        "required": required,
                    },
                    "limit": {"type": ["integer", "null"]},
                    "timeout_ms": {"type": ["integer", "null"]},
                },
            });
            if !required.is_empty() {
                body["required"] = serde_json::json!(["params"]);
            }
            post["requestBody"] = serde_json::json!({
                "required": !required.is_empty(),
                "content": {"application/json": {"schema": body}},
            });
        }
        paths.insert(format!("/v1/queries/{}", q.name), item);
    }
}

/// Bearer authentication: declared once, required everywhere but the
/// health routes, and the 401/403/429 every guarded route can answer.
pub(crate) fn apply_security(doc: &mut serde_json::Value) {
    let problem = |status: u16, what: &str| {
        let mut r = serde_json::json!({
            "description": what,
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
        });
        if status == 401 {
            r["headers"] = serde_json::json!({"WWW-Authenticate": {
                "description": "Bearer realm=\"custlake\"",
                "schema": {"type": "string"}
            }});
        }
        if status == 429 {
            r["headers"] = serde_json::json!({"Retry-After": {
                "description": "Seconds to wait before trying again",
                "schema": {"type": "integer", "minimum": 0}
            }});
        }
        r
    };
    doc["components"]["securitySchemes"] = serde_json::json!({
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "A custlake token (`custlake token create`) or a JWT signed with the configured key"
        }
    });
    doc["security"] = serde_json::json!([{"bearer": []}]);
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let open = matches!(path.as_str(), "/healthz" | "/readyz");
        let Some(ops) = item.as_object_mut() else {
            continue;
        };
        for (_, op) in ops.iter_mut() {
            let Some(op) = op.as_object_mut() else {
                continue;
            };
            if open {
                op.insert("security".into(), serde_json::json!([]));
                continue;
            }
            let Some(responses) = op.get_mut("responses").and_then(|r| r.as_object_mut()) else {
                continue;
            };
            for (status, what) in [
                (
                    401u16,
                    "Authentication required (1601): no credential, or one malformed, unknown, expired or revoked",
                ),
                (403, "Not permitted (1602): the role may not do this"),
                (
                    429,
                    "Too many requests (1301): over the role's request rate, or too many queries at once",
                ),
            ] {
                responses
                    .entry(status.to_string())
                    .or_insert_with(|| problem(status, what));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn limits_and_timeouts_carry_the_configured_bounds_everywhere() {
        let config = crate::config::Config::embedded();
        let named = crate::query::named::embedded().unwrap();
        let doc = super::super::openapi_document(&config, &named);
        let mut seen = 0;
        fn visit(v: &serde_json::Value, seen: &mut usize, max: u64) {
            if let Some(o) = v.as_object() {
                let limit = o.get("name").and_then(|n| n.as_str()) == Some("limit");
                if limit {
                    assert_eq!(o["schema"]["maximum"], max, "{v}");
                    *seen += 1;
                }
                if let Some(p) = o.get("properties").and_then(|p| p.get("limit")) {
                    assert_eq!(p["maximum"], max, "{v}");
                    *seen += 1;
                }
                o.values().for_each(|c| visit(c, seen, max));
            }
            if let Some(a) = v.as_array() {
                a.iter().for_each(|c| visit(c, seen, max));
            }
        }
        for (path, item) in doc["paths"].as_object().unwrap() {
            if path.starts_with("/v1/quer") {
                visit(item, &mut seen, config.server.max_row_limit as u64);
            }
        }
        // GET and POST of each named query, and POST /v1/query's schema.
        assert!(seen >= 2 * named.len(), "{seen}");
        assert!(doc["paths"].get("/v1/queries/customer_lookup").is_some());
        assert!(doc["paths"].get("/v1/queries/{name}").is_none());
    }
}
