//! Steward decisions on a customer's relationship: `custlake customer
//! terminate|reactivate --customer ID --reason R`. Each is a row of
//! `lifecycle_event`; the score rules read them (terminated, historical).
//! A terminated customer may be reactivated within 24 months of the
//! termination (keeping the id); after that it is historical and must be
//! registered anew.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, AsArray, Date32Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::Date32Type;
use datafusion::common::ScalarValue;

use super::AnalyticsError;
use crate::config::Config;
use crate::lake::Lake;
use crate::schema::Catalog;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Terminate,
    Reactivate,
}

impl Decision {
    pub fn name(self) -> &'static str {
        match self {
            Self::Terminate => "terminate",
            Self::Reactivate => "reactivate",
        }
    }
}

/// A recorded decision.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Decided {
    pub event_id: String,
    pub customer_id: String,
    pub action: String,
    pub effective_date: chrono::NaiveDate,
    pub version: i64,
}

/// Record `decision` on `customer_id`, effective on `effective` (a date
/// not in the future), after checking the customer's state allows it.
#[allow(clippy::too_many_arguments)]
pub async fn decide(
    config: &Config,
    lake: &Lake,
    catalog: &Catalog,
    customer_id: &str,
    decision: Decision,
    reason: &str,
    actor: &str,
    effective: chrono::NaiveDate,
) -> Result<Decided, AnalyticsError> {
    if reason.trim().is_empty() {
        return Err(AnalyticsError::Invalid(
            "--reason: say why (it is kept with the decision)".into(),
        ));
    }
    let today = chrono::Utc::now().date_naive();
    if effective > today {
        return Err(AnalyticsError::Invalid(format!(
            "--date {effective}: a decision cannot take effect in the future (today is {today})"
        )));
    }
    let ctx = super::context(config, lake, catalog, None).await?;
    let customer = ctx
        .sql("SELECT status, merged_into FROM customer WHERE customer_id = $1")
        .await?
        .with_param_values(vec![ScalarValue::Utf8(Some(customer_id.to_string()))])?
        .collect()
        .await?;
    let Some(row) = customer.iter().find(|b| b.num_rows() > 0) else {
        return Err(AnalyticsError::NotFound(format!(
            "no customer {customer_id:?}"
        )));
    };
    let row = text_columns(row)?;
    let status = row.column(0).as_string::<i32>().value(0).to_string();
    if status != "active" {
        let into = row.column(1).as_string::<i32>();
        let into = if into.is_valid(0) { into.value(0) } else { "?" };
        return Err(AnalyticsError::Refused(format!(
            "customer {customer_id} is retired (merged into {into}); decide on {into}"
        )));
    }
    let last = ctx
        .sql(
            "SELECT action, effective_date FROM lifecycle_event WHERE customer_id = $1 \
             ORDER BY effective_date DESC, decided_at DESC, event_id DESC LIMIT 1",
        )
        .await?
        .with_param_values(vec![ScalarValue::Utf8(Some(customer_id.to_string()))])?
        .collect()
        .await?;
    let last = match last.iter().find(|b| b.num_rows() > 0) {
        Some(b) => Some(text_columns(b)?),
        None => None,
    };
    let last = last.as_ref().map(|b| {
        (
            b.column(0).as_string::<i32>().value(0).to_string(),
            crate::domain::date_from_days(b.column(1).as_primitive::<Date32Type>().value(0))
                .unwrap_or_default(),
        )
    });
    let terminated = last
        .as_ref()
        .filter(|(a, _)| a == "terminate")
        .map(|(_, d)| *d);
    if let Some((_, on)) = &last
        && effective < *on
    {
        return Err(AnalyticsError::Refused(format!(
            "customer {customer_id} has a decision effective {on}; a new one cannot take effect before it"
        )));
    }
    match (decision, terminated) {
        (Decision::Terminate, Some(on)) => {
            return Err(AnalyticsError::Refused(format!(
                "customer {customer_id} is already terminated (since {on})"
            )));
        }
        (Decision::Reactivate, None) => {
            return Err(AnalyticsError::Refused(format!(
                "customer {customer_id} is not terminated; nothing to reactivate"
            )));
        }
        (Decision::Reactivate, Some(on)) => {
            let limit = on
                .checked_add_months(chrono::Months::new(24))
                .unwrap_or(chrono::NaiveDate::MAX);
            if effective > limit {
                return Err(AnalyticsError::Refused(format!(
                    "customer {customer_id} was terminated on {on}, more than 24 months before {effective}: \
                     a historical customer cannot be reactivated and must be registered anew"
                )));
            }
        }
        (Decision::Terminate, None) => {}
    }
    let def = catalog.table("lifecycle_event")?;
    let event_id = format!("LE{}", crate::security::audit::fresh_id());
    let now = chrono::Utc::now().timestamp_micros();
    let batch = RecordBatch::try_new(
        def.arrow_schema(),
        vec![
            Arc::new(StringArray::from(vec![event_id.clone()])),
            Arc::new(StringArray::from(vec![customer_id.to_string()])),
            Arc::new(StringArray::from(vec![decision.name()])),
            Arc::new(Date32Array::from(vec![crate::domain::days_since_epoch(
                effective,
            )])),
            Arc::new(StringArray::from(vec![reason.trim().to_string()])),
            Arc::new(StringArray::from(vec![actor.to_string()])),
            Arc::new(TimestampMicrosecondArray::from(vec![now]).with_timezone("UTC")),
        ],
    )?;
    let ctx = crate::lake::session::write_context();
    let df = ctx.read_batch(batch)?;
    let outcome = crate::lake::upsert(
        lake,
        &ctx,
        def,
        df,
        false,
        vec![
            ("operation".into(), decision.name().into()),
            ("customer_id".into(), customer_id.into()),
        ],
    )
    .await?;
    Ok(Decided {
        event_id,
        customer_id: customer_id.to_string(),
        action: decision.name().to_string(),
        effective_date: effective,
        version: outcome.version,
    })
}

/// A batch with its string columns as plain UTF-8 (a view or dictionary
/// read from a table becomes one).
fn text_columns(b: &RecordBatch) -> Result<RecordBatch, AnalyticsError> {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    let mut fields = Vec::new();
    let mut cols = Vec::new();
    for (f, c) in b.schema().fields().iter().zip(b.columns()) {
        if matches!(
            f.data_type(),
            DataType::Utf8View | DataType::LargeUtf8 | DataType::Dictionary(..)
        ) {
            cols.push(datafusion::arrow::compute::cast(c, &DataType::Utf8)?);
            fields.push(Field::new(f.name(), DataType::Utf8, true));
        } else {
            cols.push(c.clone());
            fields.push(f.as_ref().clone());
        }
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)
}
