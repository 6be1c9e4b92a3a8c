//! A data steward's decisions: merge, split, undo, confirm or reject a
//! suspect group. Each is written to the ledger first, with actor, reason
//! and time, then resolved from the records it names. Each holds the
//! identity lease (see [`super::leased`]) from reading the state to the
//! last write.

use std::collections::BTreeSet;

use datafusion::arrow::array::Array;
use datafusion::prelude::{SessionContext, col, lit};

use super::ledger::{Event, format_event, next_event_number, write_events};
use super::load::{now_micros, utf8};
use super::resolve::{ResolveReport, Trigger, resolve_held};
use super::{IdentityError, overwrite_batch, suspects};
use crate::lake::{Lake, Warehouse};
use crate::schema::Catalog;

/// What a steward's decision did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DecisionReport {
    pub event_id: String,
    pub event_type: String,
    pub customer_ids: Vec<String>,
    pub resolve: ResolveReport,
}

/// Manual decisions: merge, split, undo, confirm or reject a suspect
/// group, made by `actor` on a warehouse (whose rules resolve them).
pub struct Steward<'a> {
    pub warehouse: &'a Warehouse,
    pub actor: String,
}

struct State {
    ctx: SessionContext,
    events: Vec<Event>,
}

impl Steward<'_> {
    fn lake(&self) -> &Lake {
        &self.warehouse.lake
    }

    fn catalog(&self) -> &Catalog {
        &self.warehouse.catalog
    }

    async fn state(&self) -> Result<State, IdentityError> {
        let ctx = crate::lake::session::write_context();
        let have = super::load::register(
            &ctx,
            self.lake(),
            self.catalog(),
            &["customer", "customer_xref", "merge_event", "suspect_group"],
        )
        .await?;
        if !have.iter().any(|h| h == "customer_xref") {
            return Err(IdentityError::NotReady(
                "no customers have been resolved yet: run `custlake resolve` first".into(),
            ));
        }
        let events =
            super::ledger::load_events(&ctx, have.iter().any(|h| h == "merge_event")).await?;
        Ok(State { ctx, events })
    }

    /// The active customer an id stands for (following retired ids).
    async fn current(&self, ctx: &SessionContext, id: &str) -> Result<String, IdentityError> {
        let mut id = id.to_string();
        for _ in 0..64 {
            let df = ctx
                .table("customer")
                .await?
                .filter(col("customer_id").eq(lit(id.clone())))?
                .select_columns(&["status", "merged_into"])?;
            let rows = df.collect().await?;
            let Some(b) = rows.iter().find(|b| b.num_rows() > 0) else {
                return Err(IdentityError::NotFound(format!("no customer {id}")));
            };
            let (status, merged) = (utf8(b, "status")?, utf8(b, "merged_into")?);
            if status.value(0) == "retired" && merged.is_valid(0) {
                id = merged.value(0).to_string();
            } else {
                return Ok(id);
            }
        }
        Err(IdentityError::Refused(format!(
            "customer {id}: the chain of merges is too long"
        )))
    }

    /// The records of customers, as (record, customer).
    async fn records_of(
        &self,
        ctx: &SessionContext,
        ids: &[String],
    ) -> Result<Vec<(String, Option<String>)>, IdentityError> {
        let list = ids.iter().map(|i| lit(i.clone())).collect();
        let df = ctx
            .table("customer_xref")
            .await?
            .filter(col("customer_id").in_list(list, false))?
            .select_columns(&["source_system", "source_id", "customer_id"])?;
        let mut out = Vec::new();
        for b in df.collect().await? {
            let s = utf8(&b, "source_system")?;
            let i = utf8(&b, "source_id")?;
            let c = utf8(&b, "customer_id")?;
            for r in 0..b.num_rows() {
                out.push((
                    format!("{}:{}", s.value(r), i.value(r)),
                    Some(c.value(r).to_string()),
                ));
            }
        }
        out.sort();
        Ok(out)
    }

    fn reason(reason: &str) -> Result<String, IdentityError> {
        let r = reason.trim();
        if r.is_empty() {
            return Err(IdentityError::Invalid(
                "a reason is required for every manual decision".into(),
            ));
        }
        Ok(r.to_string())
    }

    /// Write the decision to the ledger (with the event it undoes, in the
    /// same commit), mark the suspect group it decides, then resolve.
    async fn record(
        &self,
        st: &State,
        mut event: Event,
        group: Option<(&str, &str)>,
        also: Option<Event>,
    ) -> Result<DecisionReport, IdentityError> {
        event.event_id = format_event(next_event_number(&st.events));
        let ctx = crate::lake::session::write_context();
        let mut rows = vec![event.clone()];
        if let Some(mut target) = also {
            target.undone_by = Some(event.event_id.clone());
            rows.push(target);
        }
        write_events(self.lake(), self.catalog(), &ctx, &rows, group.map(|g| g.0)).await?;
        if let Some((g, status)) = group {
            self.set_group_status(g, status, Some(&self.actor)).await?;
        }
        let report =
            resolve_held(self.warehouse, Trigger::Decision(event.event_id.clone())).await?;
        Ok(DecisionReport {
            event_id: event.event_id,
            event_type: event.event_type,
            customer_ids: event.customer_ids,
            resolve: report,
        })
    }

    fn event(
        &self,
        kind: &str,
        ids: Vec<String>,
        records: Vec<(String, Option<String>)>,
        reason: String,
    ) -> Event {
        Event {
            event_id: String::new(),
            event_type: kind.into(),
            customer_ids: ids,
            surviving_id: None,
            records,
            reason: Some(reason),
            actor: self.actor.clone(),
            at: now_micros(),
            undone_by: None,
        }
    }

    /// Merge customers into one (the oldest id survives).
    pub async fn merge(
        &self,
        customers: &[String],
        reason: &str,
    ) -> Result<DecisionReport, IdentityError> {
        super::leased(self.lake(), "merge", async || {
            self.merge_held(customers, reason).await
        })
        .await
    }

    /// Move records out of a customer into a new one.
    pub async fn split(
        &self,
        customer: &str,
        records: &[String],
        reason: &str,
    ) -> Result<DecisionReport, IdentityError> {
        super::leased(self.lake(), "split", async || {
            self.split_held(customer, records, reason).await
        })
        .await
    }

    /// Roll back a decision (or an automatic merge).
    pub async fn undo(&self, event: &str, reason: &str) -> Result<DecisionReport, IdentityError> {
        super::leased(self.lake(), "undo", async || {
            self.undo_held(event, reason).await
        })
        .await
    }

    /// Confirm (merge) or reject a suspected duplicate group.
    pub async fn decide_group(
        &self,
        group: &str,
        confirm: bool,
        reason: &str,
    ) -> Result<DecisionReport, IdentityError> {
        super::leased(self.lake(), "suspect group decision", async || {
            self.decide_group_held(group, confirm, reason).await
        })
        .await
    }

    async fn merge_held(
        &self,
        customers: &[String],
        reason: &str,
    ) -> Result<DecisionReport, IdentityError> {
        let reason = Self::reason(reason)?;
        let named: BTreeSet<&String> = customers.iter().collect();
        if named.len() < 2 || named.len() != customers.len() {
            return Err(IdentityError::Invalid(
                "merge needs at least two different customers, each named once".into(),
            ));
        }
        let st = self.state().await?;
        let mut ids = BTreeSet::new();
        for c in customers {
            ids.insert(self.current(&st.ctx, c).await?);
        }
        if ids.len() < 2 {
            return Err(IdentityError::Refused(
                "these customers are already one (merged earlier)".into(),
            ));
        }
        let ids: Vec<String> = ids.into_iter().collect();
        let records = self.records_of(&st.ctx, &ids).await?;
        let e = self.event("merge", ids, records, reason);
        self.record(&st, e, None, None).await
    }

    async fn split_held(
        &self,
        customer: &str,
        records: &[String],
        reason: &str,
    ) -> Result<DecisionReport, IdentityError> {
        let reason = Self::reason(reason)?;
        if records.iter().collect::<BTreeSet<_>>().len() != records.len() {
            return Err(IdentityError::Invalid(
                "name each record to split off once".into(),
            ));
        }
        let st = self.state().await?;
        let id = self.current(&st.ctx, customer).await?;
        let have = self.records_of(&st.ctx, std::slice::from_ref(&id)).await?;
        let mut moved = Vec::new();
        for r in records {
            if !have.iter().any(|(h, _)| h == r) {
                return Err(IdentityError::NotFound(format!(
                    "record {r} is not one of customer {id}'s records (use system:source_id, as `custlake explain` shows)"
                )));
            }
            moved.push((r.clone(), Some(id.clone())));
        }
        if moved.is_empty() {
            return Err(IdentityError::Invalid(
                "name at least one record to split off".into(),
            ));
        }
        if moved.len() >= have.len() {
            return Err(IdentityError::Refused(format!(
                "a split must leave at least one record with customer {id}"
            )));
        }
        let e = self.event("split", vec![id], moved, reason);
        self.record(&st, e, None, None).await
    }

    async fn undo_held(&self, event: &str, reason: &str) -> Result<DecisionReport, IdentityError> {
        let reason = Self::reason(reason)?;
        let st = self.state().await?;
        let target = st
            .events
            .iter()
            .find(|e| e.event_id == event)
            .cloned()
            .ok_or_else(|| IdentityError::NotFound(format!("no merge event {event}")))?;
        if let Some(by) = &target.undone_by {
            return Err(IdentityError::Refused(format!(
                "event {event} was already undone by {by}"
            )));
        }
        if target.event_type == "undo" {
            return Err(IdentityError::Refused(
                "an undo cannot be undone; make the decision again instead".into(),
            ));
        }
        if matches!(target.event_type.as_str(), "confirm" | "reject") {
            let group = self.group_of_event(&st, event).await?;
            if let Some(g) = group {
                self.set_group_status(&g, "open", None).await?;
            }
        }
        let mut e = self.event("undo", target.customer_ids.clone(), Vec::new(), reason);
        e.surviving_id = None;
        self.record(&st, e, None, Some(target)).await
    }

    async fn group_of_event(
        &self,
        st: &State,
        event: &str,
    ) -> Result<Option<String>, IdentityError> {
        let df = st
            .ctx
            .table("merge_event")
            .await?
            .filter(col("event_id").eq(lit(event.to_string())))?
            .select_columns(&["group_id"])?;
        for b in df.collect().await? {
            if b.num_rows() > 0 {
                let g = utf8(&b, "group_id")?;
                return Ok(g.is_valid(0).then(|| g.value(0).to_string()));
            }
        }
        Ok(None)
    }

    async fn set_group_status(
        &self,
        group: &str,
        status: &str,
        decided_by: Option<&str>,
    ) -> Result<Vec<suspects::Member>, IdentityError> {
        let ctx = crate::lake::session::write_context();
        let have =
            super::load::register(&ctx, self.lake(), self.catalog(), &["suspect_group"]).await?;
        let mut rows = suspects::load(&ctx, !have.is_empty()).await?;
        let now = now_micros();
        let mut members = Vec::new();
        for m in rows.iter_mut().filter(|m| m.group_id == group) {
            m.status = status.to_string();
            m.decided_by = decided_by.map(str::to_string);
            m.decided_at = decided_by.map(|_| now);
            members.push(m.clone());
        }
        if members.is_empty() {
            return Err(IdentityError::NotFound(format!("no suspect group {group}")));
        }
        let batch = suspects::to_batch(self.catalog(), &rows)?;
        overwrite_batch(self.lake(), self.catalog(), "suspect_group", batch).await?;
        Ok(members)
    }

    async fn decide_group_held(
        &self,
        group: &str,
        confirm: bool,
        reason: &str,
    ) -> Result<DecisionReport, IdentityError> {
        let reason = Self::reason(reason)?;
        let st = self.state().await?;
        let ctx = crate::lake::session::write_context();
        let have =
            super::load::register(&ctx, self.lake(), self.catalog(), &["suspect_group"]).await?;
        let rows = suspects::load(&ctx, !have.is_empty()).await?;
        let members: Vec<&suspects::Member> = rows.iter().filter(|m| m.group_id == group).collect();
        if members.is_empty() {
            return Err(IdentityError::NotFound(format!("no suspect group {group}")));
        }
        if let Some(m) = members.iter().find(|m| m.status != "open") {
            return Err(IdentityError::Refused(format!(
                "suspect group {group} was already {} by {}",
                m.status,
                m.decided_by.as_deref().unwrap_or("a steward")
            )));
        }
        let event = if confirm {
            let mut ids = BTreeSet::new();
            for m in &members {
                if let Some(c) = &m.customer_id {
                    ids.insert(self.current(&st.ctx, c).await?);
                }
            }
            let ids: Vec<String> = ids.into_iter().collect();
            let records = self.records_of(&st.ctx, &ids).await?;
            self.event("confirm", ids, records, reason)
        } else {
            let ids: Vec<String> = members
                .iter()
                .filter_map(|m| m.customer_id.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let records = members
                .iter()
                .map(|m| (m.member.clone(), m.customer_id.clone()))
                .collect();
            self.event("reject", ids, records, reason)
        };
        let status = if confirm { "confirmed" } else { "rejected" };
        self.record(&st, event, Some((group, status)), None).await
    }
}
