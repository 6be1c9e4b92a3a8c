//! `custlake score`, `custlake list ...` and `custlake customer
//! terminate|reactivate`.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use datafusion::common::ScalarValue;

use super::CliError;
use super::sql::{Format, SqlArgs};
use crate::analytics::lifecycle::Decision;
use crate::analytics::lists::{self, ListKind, ListRequest, Requester};
use crate::analytics::{AnalyticsError, parse_date};
use crate::lake::Warehouse;
use crate::query::{Tables, secured};
use crate::security::{Principal, Security};

#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// The scoring date D (YYYY-MM-DD, or today). Rerunning a date
    /// replaces that date's scores.
    #[arg(long, default_value = "today", value_name = "DATE")]
    pub as_of: String,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

pub(super) async fn score(wh: &Warehouse, args: &ScoreArgs) -> Result<(), CliError> {
    let as_of = parse_date("--as-of", &args.as_of)?;
    let started = std::time::Instant::now();
    let s = crate::analytics::score::run(
        &wh.config,
        &wh.lake,
        &wh.catalog,
        as_of,
        wh.progress.as_ref(),
    )
    .await?;
    if args.json {
        println!("{}", serde_json::to_string(&s)?);
        return Ok(());
    }
    let passes = if s.passes > 1 {
        format!(", {} passes", s.passes)
    } else {
        String::new()
    };
    println!(
        "scored {} customers as of {} in {:.1}s (customer_score version {}{passes})",
        s.customers,
        s.as_of,
        started.elapsed().as_secs_f64(),
        s.version
    );
    let show = |m: &std::collections::BTreeMap<String, u64>| {
        m.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("  stages: {}", show(&s.stages));
    println!("  value tiers: {}", show(&s.tiers));
    Ok(())
}

/// How a list's lines are printed and who reads them.
#[derive(Debug, Args)]
pub struct Output {
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Write the lines to FILE instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Ask as the principal of this token (or JWT): lines and fields as its
    /// role may see them (a telesales agent sees their own assignments).
    /// Without it the command runs as the lake's local operator.
    #[arg(
        long,
        env = "CUSTLAKE_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// The list's date D (YYYY-MM-DD, or today).
    #[arg(long, default_value = "today", value_name = "DATE")]
    pub as_of: String,
    /// Only this product line.
    #[arg(long)]
    pub product_line: Option<String>,
    /// Only customers of this owning team.
    #[arg(long)]
    pub team: Option<String>,
    /// Only customers of this region.
    #[arg(long)]
    pub region: Option<String>,
    #[command(flatten)]
    pub out: Output,
}

#[derive(Debug, Subcommand)]
pub enum ListCommand {
    /// Customers with active policies expiring in [D, D + N days] that
    /// nothing renews yet: one line per customer, consent-filtered,
    /// prioritised and assigned to agents.
    Renewals {
        /// The window: policies expiring within this many days of D.
        #[arg(long, default_value_t = 30)]
        within_days: u32,
        #[command(flatten)]
        list: ListArgs,
    },
    /// Active customers holding one product line of a configured pair and
    /// not the other ([[analytics.cross_sell]]).
    CrossSell(ListArgs),
    /// Value tier A and B customers who are silent or at high churn risk.
    Churn(ListArgs),
    /// A stored run's lines again, exactly as produced.
    Show {
        run_id: String,
        #[command(flatten)]
        out: Output,
    },
    /// Recompute a stored run from the lake as it was when it was made and
    /// compare it line by line with the stored lines.
    Verify { run_id: String },
}

impl ListCommand {
    pub(super) fn token(&self) -> Option<&str> {
        match self {
            Self::Renewals { list, .. } => list.out.token.as_deref(),
            Self::CrossSell(l) | Self::Churn(l) => l.out.token.as_deref(),
            Self::Show { out, .. } => out.token.as_deref(),
            Self::Verify { .. } => None,
        }
    }
}

async fn principal(
    wh: &Warehouse,
    security: &Security,
    token: Option<&str>,
) -> Result<Principal, CliError> {
    match token {
        Some(t) => Ok(security.authenticate(&wh.lake, t).await?),
        None => Ok(Principal::local()),
    }
}

pub(super) async fn list(
    wh: &Warehouse,
    security: &Security,
    c: &ListCommand,
) -> Result<(), CliError> {
    let started = std::time::Instant::now();
    let who = principal(wh, security, c.token()).await?;
    let role = security.role(&who)?;
    let (run_id, out) = match c {
        ListCommand::Verify { run_id } => {
            let v = lists::verify(&wh.config, &wh.lake, &wh.catalog, run_id).await?;
            if v.differences.is_empty() {
                println!(
                    "list run {}: recomputed from the lake as it was, the same {} line(s)",
                    v.run_id, v.lines
                );
                return Ok(());
            }
            for d in &v.differences {
                println!("{d}");
            }
            return Err(CliError::AuditBroken(format!(
                "list run {}: the recomputed lines differ from the stored ones",
                v.run_id
            )));
        }
        ListCommand::Show { run_id, out } => {
            let ctx = crate::analytics::context(&wh.config, &wh.lake, &wh.catalog, None).await?;
            lists::find(&ctx, run_id).await?;
            if !role.reads("list_line") {
                return Err(crate::security::SecurityError::Forbidden(format!(
                    "role {} may not read lists",
                    role.name
                ))
                .into());
            }
            (run_id.clone(), out)
        }
        ListCommand::Renewals { within_days, list } => {
            produce(
                wh,
                security,
                &who,
                ListKind::Renewals,
                list,
                Some(*within_days),
            )
            .await?
        }
        ListCommand::CrossSell(list) => {
            produce(wh, security, &who, ListKind::CrossSell, list, None).await?
        }
        ListCommand::Churn(list) => {
            produce(wh, security, &who, ListKind::Churn, list, None).await?
        }
    };
    if !role.allows_format(&format!("{:?}", out.format).to_lowercase())
        && !matches!(out.format, Format::Table)
    {
        return Err(crate::security::SecurityError::Forbidden(format!(
            "role {} may not export as {:?}",
            role.name, out.format
        ))
        .into());
    }
    let runtime = crate::query::runtime(&wh.config)?;
    // Tables opened as the statement names them (the run's lines, and what
    // the principal's row filter consults), not every table of the lake.
    let tables = std::sync::Arc::new(crate::query::TableCache::default());
    let ctx = secured(
        &wh.config,
        runtime,
        &wh.lake,
        &wh.catalog,
        Tables::Cached(&tables),
        security,
        &who,
    )
    .await?
    .ctx;
    let df = ctx
        .sql(lists::LINES_SQL)
        .await?
        .with_param_values(vec![("run_id", ScalarValue::Utf8(Some(run_id.clone())))])?;
    let df = if who.via == "local" {
        df
    } else {
        df.limit(0, Some(role.max_rows))?
    };
    let schema = df.schema().inner().clone();
    let stream = df.execute_stream().await?;
    let mut args = SqlArgs::table(String::new());
    args.format = out.format;
    args.output = out.output.clone();
    super::sql::write(&args, schema, stream).await?;
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        "list: lines read back and written"
    );
    Ok(())
}

async fn produce<'a>(
    wh: &Warehouse,
    security: &Security,
    who: &Principal,
    kind: ListKind,
    list: &'a ListArgs,
    within_days: Option<u32>,
) -> Result<(String, &'a Output), CliError> {
    let role = security.role(who)?;
    if !role.may("lists") {
        return Err(crate::security::SecurityError::Forbidden(format!(
            "role {} may not produce lists",
            role.name
        ))
        .into());
    }
    let req = ListRequest {
        as_of: Some(list.as_of.clone()),
        within_days,
        product_line: list.product_line.clone(),
        team: list.team.clone(),
        region: list.region.clone(),
    };
    let run = lists::produce(
        &wh.config,
        &wh.lake,
        &wh.catalog,
        kind,
        &req,
        Requester {
            principal: &who.user,
            role: &who.role,
        },
    )
    .await?;
    eprintln!(
        "list run {} ({} as of {}, scores of {}): {} line(s), {} assigned; \
         `custlake list show {}` prints it again",
        run.run_id,
        run.kind.name(),
        run.as_of,
        run.scores_as_of.map(|d| d.to_string()).unwrap_or_default(),
        run.row_count,
        run.assigned,
        run.run_id
    );
    Ok((run.run_id, &list.out))
}

#[derive(Debug, Subcommand)]
pub enum CustomerCommand {
    /// End the relationship: the customer is terminated from DATE
    /// (historical 24 months later) and leaves every list.
    Terminate(DecideArgs),
    /// Undo a termination within 24 months of it (the customer keeps its id).
    Reactivate(DecideArgs),
}

#[derive(Debug, Args)]
pub struct DecideArgs {
    /// The golden customer id.
    #[arg(long)]
    pub customer: String,
    /// Why (kept with the decision).
    #[arg(long)]
    pub reason: String,
    /// The day it takes effect (default today; not in the future).
    #[arg(long, default_value = "today", value_name = "DATE")]
    pub date: String,
}

pub(super) async fn customer(wh: &Warehouse, c: &CustomerCommand) -> Result<(), CliError> {
    let (decision, args) = match c {
        CustomerCommand::Terminate(a) => (Decision::Terminate, a),
        CustomerCommand::Reactivate(a) => (Decision::Reactivate, a),
    };
    let date = parse_date("--date", &args.date)?;
    let actor = Principal::local().user;
    let d = crate::analytics::lifecycle::decide(
        &wh.config,
        &wh.lake,
        &wh.catalog,
        &args.customer,
        decision,
        &args.reason,
        &actor,
        date,
    )
    .await?;
    println!(
        "{} {}: effective {} (event {}, lifecycle_event version {}); run `custlake score` to update its stage",
        d.action, d.customer_id, d.effective_date, d.event_id, d.version
    );
    Ok(())
}

impl From<AnalyticsError> for CliError {
    fn from(e: AnalyticsError) -> Self {
        CliError::Analytics(e)
    }
}
