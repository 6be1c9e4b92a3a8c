//! Golden customers over HTTP: lineage, suspect groups and steward
//! decisions (merge, split, undo, confirm, reject). Decisions run one at a
//! time; each is recorded in the ledger under the request's principal.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::SharedState;
use super::auth::Caller;
use super::docs::{DecisionProblems, ReadProblems};
use super::error::ApiError;
use super::extract::{Body, Params, PathParams, Shape};
use crate::identity::{DecisionReport, IdentityError, Steward};

fn identity_error(e: IdentityError) -> ApiError {
    ApiError::from_error("identity resolution", &e)
}

/// The path of a golden customer.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct CustomerId {
    /// A golden customer id (`CU` + 10 digits); a retired id is followed
    /// to its survivor.
    id: String,
}

/// How a golden customer was built: golden fields and their sources, the
/// source records with rule, score and per-field similarities, suspect
/// groups, retired ids and ledger events.
#[utoipa::path(
    get,
    path = "/v1/customers/{id}/lineage",
    operation_id = "customer_lineage",
    tag = "customers",
    params(CustomerId),
    responses(
        (status = 200, description = "The customer's lineage", body = Object),
        ReadProblems
    )
)]
pub(crate) async fn lineage(
    State(state): State<SharedState>,
    caller: Caller,
    PathParams(CustomerId { id }): PathParams<CustomerId>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.note.set(|n| {
        n.action = Some("lineage".into());
        n.object = Some(id.clone());
    });
    // The caller's secured views, on the shared runtime: a customer it may
    // not see is not found, fields it may not see are masked or left out.
    let question = format!("lineage\u{1f}{id}");
    state
        .answers
        .get_or(
            &state,
            &caller.principal,
            &question,
            &LINEAGE_READS,
            async |ctx| {
                crate::identity::explain::lineage_of(&ctx, &id)
                    .await
                    .map_err(identity_error)
            },
        )
        .await
        .map(Json)
}

/// The tables a customer's lineage reads.
const LINEAGE_READS: [&str; 4] = ["customer", "customer_xref", "merge_event", "suspect_group"];

/// Members of a suspect group, as a principal sees them.
async fn members(
    state: &SharedState,
    principal: &crate::security::Principal,
    group: &str,
) -> Result<usize, ApiError> {
    use datafusion::prelude::{col, lit};
    let ctx = super::query::session_of(state, principal).await?;
    if !ctx.table_exist("suspect_group").unwrap_or(false) {
        return Ok(0);
    }
    let n = ctx
        .table("suspect_group")
        .await
        .and_then(|t| t.filter(col("group_id").eq(lit(group.to_string()))))
        .map_err(|e| ApiError::from_error("checking access", &crate::query::QueryError::from(e)))?
        .count()
        .await
        .map_err(|e| ApiError::from_error("checking access", &crate::query::QueryError::from(e)))?;
    Ok(n)
}

/// A group is decided whole: 403 unless the caller sees every member (a
/// steward may not merge another team's customer through a mixed group).
async fn whole_group(state: &SharedState, caller: &Caller, group: &str) -> Result<(), ApiError> {
    let seen = members(state, &caller.principal, group).await?;
    let all = members(state, &crate::security::Principal::local(), group).await?;
    if seen < all {
        return Err(super::auth::forbidden(
            &caller.principal,
            "decide on a group with members outside its rows",
        ));
    }
    Ok(())
}

/// 404 unless every one of `ids` is a row of `table` the caller may see
/// (a steward decides on the customers of their own teams only; a
/// customer out of sight is "not found", so its existence is not told).
async fn visible(
    state: &SharedState,
    caller: &Caller,
    table: &str,
    column: &str,
    ids: &[String],
) -> Result<(), ApiError> {
    use datafusion::prelude::{col, lit};
    let ctx = super::query::session(state, caller).await?;
    let unseen =
        || ApiError::not_found(format!("no {table} row with {column} {:?}", ids.join(", ")));
    if !ctx.table_exist(table).unwrap_or(false) {
        return Err(unseen());
    }
    let list = ids.iter().map(|i| lit(i.clone())).collect();
    let df = ctx
        .table(table)
        .await
        .and_then(|t| t.filter(col(column).in_list(list, false)))
        .and_then(|t| t.select(vec![col(column)]))
        .map_err(|e| ApiError::from_error("checking access", &crate::query::QueryError::from(e)))?;
    let batches = df
        .collect()
        .await
        .map_err(|e| ApiError::from_error("checking access", &crate::query::QueryError::from(e)))?;
    let seen: std::collections::BTreeSet<String> = batches
        .iter()
        .flat_map(|b| {
            let c = datafusion::arrow::compute::cast(
                b.column(0),
                &datafusion::arrow::datatypes::DataType::Utf8,
            )
            .ok();
            c.map(|c| {
                let a = datafusion::arrow::array::AsArray::as_string::<i32>(&c).clone();
                (0..datafusion::arrow::array::Array::len(&a))
                    .map(|i| a.value(i).to_string())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
        })
        .collect();
    match ids.iter().find(|i| !seen.contains(*i)) {
        Some(missing) => Err(ApiError::not_found(format!(
            "no {table} row with {column} {missing:?}"
        ))),
        None => Ok(()),
    }
}

/// Customers one merge may name: a decision looks up each, under the
/// identity lease that every other writer waits for.
const MAX_MERGE: usize = 100;
/// Records one split may move.
const MAX_SPLIT: usize = 1000;

fn at_most(what: &str, n: usize, max: usize) -> Result<(), ApiError> {
    if n > max {
        return Err(ApiError::bad_parameter(format!(
            "\"{what}\" names {n}; at most {max} are allowed in one decision"
        )));
    }
    Ok(())
}

/// Customers to merge by hand.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MergeRequest {
    /// Two or more golden customer ids (at most 100); the oldest survives.
    #[schema(min_items = 2, max_items = 100)]
    customers: Vec<String>,
    /// Why (recorded in the ledger).
    #[schema(min_length = 1, pattern = r"\S")]
    reason: String,
}

impl Shape for MergeRequest {
    const SHAPE: &'static str = "{\"customers\": [id, id, ...], \"reason\": ...}";
}

/// Source records to split off a customer.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SplitRequest {
    /// Records as `system:source_id` (as the lineage shows them; at most
    /// 1,000).
    #[schema(min_items = 1, max_items = 1000)]
    records: Vec<String>,
    /// Why (recorded in the ledger).
    #[schema(min_length = 1, pattern = r"\S")]
    reason: String,
}

impl Shape for SplitRequest {
    const SHAPE: &'static str = "{\"records\": [\"system:source_id\", ...], \"reason\": ...}";
}

/// A decision's reason.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReasonRequest {
    /// Why (recorded in the ledger).
    #[schema(min_length = 1, pattern = r"\S")]
    reason: String,
}

impl Shape for ReasonRequest {
    const SHAPE: &'static str = "{\"reason\": ...}";
}

/// What a decision did: its ledger event and the resolution it ran.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Decision {
    event_id: String,
    /// `merge`, `split`, `undo`, `confirm` or `reject`.
    event_type: String,
    customer_ids: Vec<String>,
    /// The resolution the decision ran (records, customers, changes).
    #[schema(value_type = Object)]
    resolve: serde_json::Value,
}

impl From<DecisionReport> for Decision {
    fn from(r: DecisionReport) -> Self {
        Self {
            event_id: r.event_id,
            event_type: r.event_type,
            customer_ids: r.customer_ids,
            resolve: serde_json::to_value(&r.resolve).unwrap_or_default(),
        }
    }
}

enum Action {
    Merge(Vec<String>),
    Split(String, Vec<String>),
    Undo(String),
    Group(String, bool),
}

async fn decide(
    state: &SharedState,
    caller: &Caller,
    action: Action,
    reason: &str,
) -> Result<Json<Decision>, ApiError> {
    let (name, object) = match &action {
        Action::Merge(ids) => ("merge", ids.join(",")),
        Action::Split(id, _) => ("split", id.clone()),
        Action::Undo(event) => ("undo", event.clone()),
        Action::Group(group, true) => ("confirm", group.clone()),
        Action::Group(group, false) => ("reject", group.clone()),
    };
    caller.note.set(|n| {
        n.action = Some(name.into());
        n.object = Some(object);
        n.params = Some(serde_json::json!({ "reason": reason }).to_string());
    });
    caller.must(state, "steward")?;
    match &action {
        Action::Merge(ids) => {
            // Fewer than two distinct customers is refused by the merge
            // itself, with its own words.
            let distinct: std::collections::BTreeSet<&String> = ids.iter().collect();
            if distinct.len() >= 2 {
                let distinct: Vec<String> = distinct.into_iter().cloned().collect();
                visible(state, caller, "customer", "customer_id", &distinct).await?
            }
        }
        Action::Split(id, _) => {
            visible(
                state,
                caller,
                "customer",
                "customer_id",
                std::slice::from_ref(id),
            )
            .await?
        }
        Action::Undo(event) => {
            visible(
                state,
                caller,
                "merge_event",
                "event_id",
                std::slice::from_ref(event),
            )
            .await?
        }
        Action::Group(group, _) => {
            visible(
                state,
                caller,
                "suspect_group",
                "group_id",
                std::slice::from_ref(group),
            )
            .await?;
            whole_group(state, caller, group).await?
        }
    }
    let actor = caller.principal.user.clone();
    // A decision runs to its end on a task of its own: a client that hangs
    // up, or a request dropped at shutdown, must not leave a ledger event
    // without its resolution.
    let (state, reason) = (state.clone(), reason.to_string());
    let task = tokio::spawn(async move {
        let _one_at_a_time = state.decisions.lock().await;
        let s = Steward {
            warehouse: &state.warehouse,
            actor,
        };
        match &action {
            Action::Merge(ids) => s.merge(ids, &reason).await,
            Action::Split(id, records) => s.split(id, records, &reason).await,
            Action::Undo(event) => s.undo(event, &reason).await,
            Action::Group(group, confirm) => s.decide_group(group, *confirm, &reason).await,
        }
    });
    let result = task
        .await
        .map_err(|e| ApiError::internal("a steward decision", e))?;
    result.map(|r| Json(r.into())).map_err(identity_error)
}

/// Merge customers by hand; the oldest id survives, the others retire
/// pointing to it.
#[utoipa::path(
    post,
    path = "/v1/customers/merge",
    operation_id = "merge_customers",
    tag = "customers",
    request_body = MergeRequest,
    responses((status = 200, description = "The merge and its resolution", body = Decision), DecisionProblems)
)]
pub(crate) async fn merge(
    State(state): State<SharedState>,
    caller: Caller,
    Body(req): Body<MergeRequest>,
) -> Result<Json<Decision>, ApiError> {
    at_most("customers", req.customers.len(), MAX_MERGE)?;
    decide(&state, &caller, Action::Merge(req.customers), &req.reason).await
}

/// Move source records off a customer into a new one.
#[utoipa::path(
    post,
    path = "/v1/customers/{id}/split",
    operation_id = "split_customer",
    tag = "customers",
    params(CustomerId),
    request_body = SplitRequest,
    responses((status = 200, description = "The split and its resolution", body = Decision), DecisionProblems)
)]
pub(crate) async fn split(
    State(state): State<SharedState>,
    caller: Caller,
    PathParams(CustomerId { id }): PathParams<CustomerId>,
    Body(req): Body<SplitRequest>,
) -> Result<Json<Decision>, ApiError> {
    at_most("records", req.records.len(), MAX_SPLIT)?;
    decide(&state, &caller, Action::Split(id, req.records), &req.reason).await
}

/// The path of a ledger event.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct EventId {
    /// A ledger event id (`EV` + 10 digits).
    id: String,
}

/// Roll back a merge, split, confirm, reject or automatic merge.
#[utoipa::path(
    post,
    path = "/v1/merge-events/{id}/undo",
    operation_id = "undo_event",
    tag = "customers",
    params(EventId),
    request_body = ReasonRequest,
    responses((status = 200, description = "The undo and its resolution", body = Decision), DecisionProblems)
)]
pub(crate) async fn undo(
    State(state): State<SharedState>,
    caller: Caller,
    PathParams(EventId { id }): PathParams<EventId>,
    Body(req): Body<ReasonRequest>,
) -> Result<Json<Decision>, ApiError> {
    decide(&state, &caller, Action::Undo(id), &req.reason).await
}

/// What to do with a suspect group.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum GroupAction {
    /// Merge the group's customers.
    Confirm,
    /// Stop proposing them.
    Reject,
}

/// The path of a decision on a suspect group.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct GroupDecision {
    /// A suspect group id.
    group: String,
    #[param(inline)]
    action: GroupAction,
}

/// Confirm (merge) or reject a suspected duplicate group.
#[utoipa::path(
    post,
    path = "/v1/suspects/{group}/{action}",
    operation_id = "decide_suspect_group",
    tag = "customers",
    params(GroupDecision),
    request_body = ReasonRequest,
    responses((status = 200, description = "The decision and its resolution", body = Decision), DecisionProblems)
)]
pub(crate) async fn group_decision(
    State(state): State<SharedState>,
    caller: Caller,
    PathParams(GroupDecision { group, action }): PathParams<GroupDecision>,
    Body(req): Body<ReasonRequest>,
) -> Result<Json<Decision>, ApiError> {
    let confirm = matches!(action, GroupAction::Confirm);
    decide(&state, &caller, Action::Group(group, confirm), &req.reason).await
}

/// The status of suspect groups.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, utoipa::ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum GroupStatus {
    Open,
    Confirmed,
    Rejected,
}

impl GroupStatus {
    fn name(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Confirmed => "confirmed",
            Self::Rejected => "rejected",
        }
    }
}

/// Which suspect groups to list.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SuspectQuery {
    /// `open` (default), `confirmed` or `rejected`.
    #[param(inline)]
    status: Option<GroupStatus>,
    /// Groups to list at most (default 50; clamped to 1..1000).
    limit: Option<u32>,
}

/// A member of a suspect group.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct SuspectMember {
    /// The source record, `system:source_id`.
    member: String,
    customer_id: Option<String>,
    score: Option<f64>,
    /// Per-field similarities with the record it was matched to.
    #[schema(value_type = Option<Object>)]
    detail: Option<serde_json::Value>,
}

/// A suspected duplicate group.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct SuspectGroup {
    group_id: String,
    rule: String,
    score: f64,
    members: Vec<SuspectMember>,
}

/// Suspect groups of one status.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Suspects {
    #[schema(inline)]
    status: GroupStatus,
    groups: Vec<SuspectGroup>,
}

/// Suspected duplicate groups with their members, scores and field
/// similarities.
#[utoipa::path(
    get,
    path = "/v1/suspects",
    operation_id = "list_suspects",
    tag = "customers",
    params(SuspectQuery),
    responses((status = 200, description = "The groups", body = Suspects), ReadProblems)
)]
pub(crate) async fn suspects(
    State(state): State<SharedState>,
    caller: Caller,
    Params(q): Params<SuspectQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let status = q.status.unwrap_or(GroupStatus::Open);
    let limit = q.limit.unwrap_or(50).clamp(1, 1000) as usize;
    caller.note.set(|n| {
        n.action = Some("suspects".into());
        n.params = Some(serde_json::json!({"status": status.name(), "limit": limit}).to_string());
    });
    // The caller's secured views: only the groups of customers it may see.
    let question = format!("suspects\u{1f}{}\u{1f}{limit}", status.name());
    state
        .answers
        .get_or(
            &state,
            &caller.principal,
            &question,
            &["suspect_group", "customer"],
            async |ctx| {
                let groups = suspect_groups(&ctx, status, limit).await?;
                serde_json::to_value(Suspects { status, groups })
                    .map_err(|e| ApiError::internal("writing the groups", e))
            },
        )
        .await
        .map(Json)
}

/// The groups of `status` in `ctx`'s secured views, at most `limit`.
async fn suspect_groups(
    ctx: &datafusion::prelude::SessionContext,
    status: GroupStatus,
    limit: usize,
) -> Result<Vec<SuspectGroup>, ApiError> {
    let have = ctx.table_exist("suspect_group").unwrap_or(false);
    let rows = crate::identity::suspects::load_groups(ctx, have, status.name(), limit)
        .await
        .map_err(identity_error)?;
    let mut groups: Vec<SuspectGroup> = Vec::new();
    for m in rows {
        if groups.last().is_none_or(|g| g.group_id != m.group_id) {
            groups.push(SuspectGroup {
                group_id: m.group_id.clone(),
                rule: m.rule.clone(),
                score: 0.0,
                members: Vec::new(),
            });
        }
        if let Some(g) = groups.last_mut() {
            g.score = g.score.max(m.score.unwrap_or(0.0));
            g.members.push(SuspectMember {
                member: m.member,
                customer_id: m.customer_id,
                score: m.score,
                detail: m
                    .detail
                    .as_deref()
                    .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok()),
            });
        }
    }
    Ok(groups)
}
