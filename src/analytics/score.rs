//! `custlake score`: every golden customer's lifecycle stage, value score
//! and tier, churn risk, segment and product lines as of a date
//! (`sql/analytics/score.sql`), written to `customer_score` so trends can
//! be queried. Rerunning a date replaces that date's rows in one commit.

use std::collections::{BTreeMap, HashMap};

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{cast, col, lit};

use super::{AnalyticsError, bind, context, rule};
use crate::config::Config;
use crate::lake::Lake;
use crate::progress::{Progress, Unit};
use crate::schema::Catalog;

/// What a score run wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Scored {
    pub as_of: chrono::NaiveDate,
    pub customers: u64,
    /// Customers per lifecycle stage.
    pub stages: BTreeMap<String, u64>,
    /// Customers per value tier.
    pub tiers: BTreeMap<String, u64>,
    /// The customer_score version the run committed.
    pub version: i64,
}

/// The score rules' result for `as_of`, in `customer_score`'s columns.
pub async fn compute(
    config: &Config,
    ctx: &datafusion::prelude::SessionContext,
    catalog: &Catalog,
    as_of: chrono::NaiveDate,
) -> Result<Vec<RecordBatch>, AnalyticsError> {
    let q = rule("score")?;
    let given = HashMap::from([("as_of".to_string(), as_of.to_string())]);
    let params = bind(config, &q, &given)?;
    let df = ctx.sql(&q.sql).await?.with_param_values(params)?;
    let def = catalog.table("customer_score")?;
    let scored_at = chrono::Utc::now().timestamp_micros();
    let month = as_of.format("%Y-%m").to_string();
    let exprs = def
        .fields
        .iter()
        .map(|f| {
            let e = match f.name.as_str() {
                "scored_at" => lit(ScalarValue::TimestampMicrosecond(
                    Some(scored_at),
                    Some("UTC".into()),
                )),
                "as_of_month" => lit(month.clone()),
                n => col(n),
            };
            cast(e, f.ty.arrow()).alias(&f.name)
        })
        .collect::<Vec<_>>();
    Ok(df.select(exprs)?.collect().await?)
}

/// Score every golden customer as of `as_of` and replace that date's rows
/// of `customer_score`.
pub async fn run(
    config: &Config,
    lake: &Lake,
    catalog: &Catalog,
    as_of: chrono::NaiveDate,
    progress: &dyn Progress,
) -> Result<Scored, AnalyticsError> {
    let task = progress.task("scoring", None, Unit::Items("customers"));
    let result = async {
        let ctx = context(config, lake, catalog, None).await?;
        let batches = compute(config, &ctx, catalog, as_of).await?;
        let mut scored = Scored {
            as_of,
            customers: 0,
            stages: BTreeMap::new(),
            tiers: BTreeMap::new(),
            version: 0,
        };
        for b in &batches {
            scored.customers += b.num_rows() as u64;
            for (name, counts) in [
                ("lifecycle_stage", &mut scored.stages),
                ("value_tier", &mut scored.tiers),
            ] {
                let Some(c) = b.column_by_name(name) else {
                    continue;
                };
                let c = c.as_string::<i32>();
                for i in 0..c.len() {
                    if c.is_valid(i) {
                        *counts.entry(c.value(i).to_string()).or_default() += 1;
                    }
                }
            }
        }
        task.set_position(scored.customers);
        task.set_message("writing customer_score");
        let def = catalog.table("customer_score")?;
        let write_ctx = crate::lake::session::write_context();
        // No customers (nothing resolved yet): the date's scores are none,
        // written as such, not a batch of no columns.
        let batches = if batches.is_empty() {
            vec![RecordBatch::new_empty(def.arrow_schema())]
        } else {
            batches
        };
        let df = write_ctx.read_batches(batches)?;
        let days = crate::domain::days_since_epoch(as_of);
        let outcome = crate::lake::replace_where(
            lake,
            &write_ctx,
            def,
            df,
            crate::lake::Replace {
                column: "as_of",
                value: ScalarValue::Date32(Some(days)),
                partition: &as_of.format("%Y-%m").to_string(),
            },
            vec![
                ("operation".into(), "score".into()),
                ("as_of".into(), as_of.to_string().into()),
            ],
        )
        .await?;
        scored.version = outcome.version;
        Ok::<_, AnalyticsError>(scored)
    }
    .await;
    match &result {
        Ok(_) => task.finish(),
        Err(_) => task.fail("failed"),
    }
    result
}
