//! `resolve`, `explain`, `merge`, `split`, `undo`, `suspects`, `dedupe`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::CliError;
use crate::identity::{self, DecisionReport, ResolveReport, Rules, Steward, Trigger};
use crate::lake::Warehouse;

#[derive(Debug, Args)]
pub struct RulesArg {
    /// Matching rules (default: the shipped schemas/identity.toml).
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
}

impl RulesArg {
    /// The warehouse with these rules (its own, the shipped ones, unless
    /// `--rules` names a file).
    fn apply(&self, wh: &Warehouse) -> Result<Warehouse, CliError> {
        Ok(match &self.rules {
            Some(p) => wh.clone().with_rules(Rules::from_file(p)?),
            None => wh.clone(),
        })
    }
}

#[derive(Debug, Args)]
pub struct ResolveArgs {
    #[command(flatten)]
    pub rules: RulesArg,
    /// Resolve every record again. Without it, a run after the first looks
    /// only at the records ingested since the previous run and those they
    /// can affect (the result is the same), unless the rules changed.
    #[arg(long)]
    pub full: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Golden customer id (a retired id is followed to its survivor).
    #[arg(long)]
    pub customer: String,
    /// Print the full lineage as JSON.
    #[arg(long)]
    pub json: bool,
    /// Explain as this token's (or JWT's) principal: through its secured
    /// views, masked and filtered (a customer out of its sight is not found).
    #[arg(
        long,
        env = "CUSTLAKE_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Two or more customer ids to merge; the oldest survives.
    #[arg(long, num_args = 2.., required = true)]
    pub customers: Vec<String>,
    /// Why (recorded in the ledger).
    #[arg(long)]
    pub reason: String,
    #[command(flatten)]
    pub steward: StewardArgs,
}

#[derive(Debug, Args)]
pub struct SplitArgs {
    /// The customer to split.
    #[arg(long)]
    pub customer: String,
    /// Source records to move to a new customer, as system:source_id.
    #[arg(long, num_args = 1.., required = true)]
    pub records: Vec<String>,
    #[arg(long)]
    pub reason: String,
    #[command(flatten)]
    pub steward: StewardArgs,
}

#[derive(Debug, Args)]
pub struct UndoArgs {
    /// The merge event to roll back.
    #[arg(long)]
    pub event: String,
    #[arg(long)]
    pub reason: String,
    #[command(flatten)]
    pub steward: StewardArgs,
}

#[derive(Debug, Args)]
pub struct StewardArgs {
    /// Who decides (recorded in the ledger).
    #[arg(long, env = "USER", default_value = "steward")]
    pub actor: String,
    #[command(flatten)]
    pub rules: RulesArg,
}

#[derive(Debug, Subcommand)]
pub enum SuspectsCommand {
    /// List suspected duplicate groups.
    List {
        /// open, confirmed or rejected.
        #[arg(long, default_value = "open")]
        status: String,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Confirm a group: its customers are merged.
    Confirm {
        group: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        steward: StewardArgs,
    },
    /// Reject a group: its members are not proposed again.
    Reject {
        group: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        steward: StewardArgs,
    },
}

#[derive(Debug, Args)]
pub struct DedupeArgs {
    /// Rules file declaring the CSV's fields, blocks and comparisons.
    #[arg(long)]
    pub rules: PathBuf,
    /// Input CSV (UTF-8, with a header).
    #[arg(long)]
    pub input: PathBuf,
    /// The column holding each row's unique id.
    #[arg(long)]
    pub id_column: String,
    /// Output CSV: id,cluster_id for every input row.
    #[arg(long)]
    pub output: PathBuf,
}

fn print_resolve(r: &ResolveReport) {
    if r.mode == "incremental" {
        eprintln!(
            "incremental run: {} new or changed source records, {} records re-examined with them",
            r.new_or_changed, r.records
        );
    } else if let Some(why) = &r.full_because {
        eprintln!("full run ({why})");
    }
    eprintln!(
        "resolved {} source records into {} customers in {:.1}s: {} new, {} retired by merges, {} revived; \
         {} links and {} golden records written; {} open suspect groups; {} candidate pairs compared, \
         {} automatic merges refused (different valid ids){}",
        r.records,
        r.customers,
        r.seconds,
        r.new_customers,
        r.retired,
        r.revived,
        r.changed_links,
        r.changed_customers,
        r.suspect_groups,
        r.candidate_pairs,
        r.refused_merges,
        if r.oversized_blocks > 0 {
            format!(
                "; {} blocks too large to compare (raise max_block or use a narrower key)",
                r.oversized_blocks
            )
        } else {
            String::new()
        }
    );
}

fn print_decision(d: &DecisionReport) {
    eprintln!(
        "{} recorded as event {} (customers {})",
        d.event_type,
        d.event_id,
        d.customer_ids.join(", ")
    );
    print_resolve(&d.resolve);
}

pub(super) async fn resolve(wh: &Warehouse, args: &ResolveArgs) -> Result<(), CliError> {
    let wh = args.rules.apply(wh)?;
    let trigger = if args.full {
        Trigger::Full
    } else {
        Trigger::Auto
    };
    let r = identity::resolve(&wh, trigger).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print_resolve(&r);
    }
    Ok(())
}

pub(super) async fn merge(wh: &Warehouse, args: &MergeArgs) -> Result<(), CliError> {
    let wh = args.steward.rules.apply(wh)?;
    let d = steward(&wh, &args.steward)
        .merge(&args.customers, &args.reason)
        .await?;
    print_decision(&d);
    Ok(())
}

pub(super) async fn split(wh: &Warehouse, args: &SplitArgs) -> Result<(), CliError> {
    let wh = args.steward.rules.apply(wh)?;
    let d = steward(&wh, &args.steward)
        .split(&args.customer, &args.records, &args.reason)
        .await?;
    print_decision(&d);
    Ok(())
}

pub(super) async fn undo(wh: &Warehouse, args: &UndoArgs) -> Result<(), CliError> {
    let wh = args.steward.rules.apply(wh)?;
    let d = steward(&wh, &args.steward)
        .undo(&args.event, &args.reason)
        .await?;
    print_decision(&d);
    Ok(())
}

fn steward<'a>(wh: &'a Warehouse, a: &StewardArgs) -> Steward<'a> {
    Steward {
        warehouse: wh,
        actor: a.actor.clone(),
    }
}

pub(super) async fn suspects(wh: &Warehouse, cmd: &SuspectsCommand) -> Result<(), CliError> {
    match cmd {
        SuspectsCommand::List { status, limit } => {
            if !["open", "confirmed", "rejected"].contains(&status.as_str()) {
                return Err(CliError::Usage(
                    "--status must be open, confirmed or rejected".into(),
                ));
            }
            let sql = format!(
                "SELECT group_id, member, customer_id, rule, score, detail FROM suspect_group \
                 WHERE status = '{status}' AND group_id IN (SELECT DISTINCT group_id FROM suspect_group \
                 WHERE status = '{status}' ORDER BY group_id LIMIT {limit}) ORDER BY group_id, member"
            );
            let args = super::sql::SqlArgs::table(sql);
            let security = crate::security::Security::open(&wh.config, &wh.lake).await?;
            super::sql::run(wh, &security, &args).await
        }
        SuspectsCommand::Confirm {
            group,
            reason,
            steward: s,
        }
        | SuspectsCommand::Reject {
            group,
            reason,
            steward: s,
        } => {
            let wh = s.rules.apply(wh)?;
            let confirm = matches!(cmd, SuspectsCommand::Confirm { .. });
            let d = steward(&wh, s).decide_group(group, confirm, reason).await?;
            print_decision(&d);
            Ok(())
        }
    }
}

pub(super) async fn explain(wh: &Warehouse, args: &ExplainArgs) -> Result<(), CliError> {
    let v = match &args.token {
        None => identity::explain::lineage(&wh.lake, &wh.catalog, &args.customer).await?,
        Some(t) => {
            let security = crate::security::Security::open(&wh.config, &wh.lake).await?;
            let principal = security.authenticate(&wh.lake, t).await?;
            let ctx = crate::query::secured(
                &wh.config,
                crate::query::runtime(&wh.config)?,
                &wh.lake,
                &wh.catalog,
                crate::query::Tables::AsOf(None),
                &security,
                &principal,
            )
            .await?
            .ctx;
            identity::explain::lineage_of(&ctx, &args.customer).await?
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let s = |v: &serde_json::Value, k: &str| -> String {
        match v.get(k) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Null) | None => "-".into(),
            Some(other) => other.to_string(),
        }
    };
    let c = &v["customer"];
    if v["followed"].as_array().is_some_and(|a| a.len() > 1) {
        println!("{} was merged; following: {}", args.customer, v["followed"]);
    }
    println!(
        "customer {} ({}, {})",
        s(&v, "customer_id"),
        s(c, "customer_type"),
        s(c, "status")
    );
    println!("  golden fields (value ← source record):");
    let sources = &c["survivorship"];
    for f in crate::identity::GOLDEN_FIELDS {
        println!("    {f:<12} {:<40} ← {}", s(c, f), s(sources, f));
    }
    println!("  source records:");
    for r in v["records"].as_array().into_iter().flatten() {
        println!(
            "    {}:{:<14} rule {:<34} score {:<6} by {:<10} at {}",
            s(r, "source_system"),
            s(r, "source_id"),
            s(r, "rule"),
            s(r, "score"),
            s(r, "linked_by"),
            s(r, "linked_at")
        );
        if let Some(d) = r.get("detail").filter(|d| !d.is_null()) {
            println!("      field similarities: {d}");
        }
    }
    if let Some(ids) = v["retired_ids"].as_array().filter(|a| !a.is_empty()) {
        println!(
            "  retired ids merged into it: {}",
            serde_json::Value::Array(ids.clone())
        );
    }
    for g in v["suspect_groups"].as_array().into_iter().flatten() {
        println!(
            "  suspect group {} ({}): {} of customer {} scored {} by {}: {}",
            s(g, "group_id"),
            s(g, "status"),
            s(g, "member"),
            s(g, "customer_id"),
            s(g, "score"),
            s(g, "rule"),
            g.get("detail").cloned().unwrap_or_default()
        );
    }
    for e in v["events"].as_array().into_iter().flatten() {
        println!(
            "  event {} {} by {} at {}: customers {} reason {}{}",
            s(e, "event_id"),
            s(e, "event_type"),
            s(e, "actor"),
            s(e, "at"),
            e.get("customer_ids").cloned().unwrap_or_default(),
            s(e, "reason"),
            e.get("undone_by")
                .and_then(|u| u.as_str())
                .map(|u| format!(" (undone by {u})"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

pub(super) fn dedupe(args: &DedupeArgs) -> Result<(), CliError> {
    let rules = Rules::from_file(&args.rules)?;
    let r = identity::dedupe::dedupe(&rules, &args.input, &args.id_column, &args.output)?;
    eprintln!(
        "{} rows → {} clusters in {:.2}s ({} candidate pairs, {} pairs for review){}; wrote {}",
        r.rows,
        r.clusters,
        r.seconds,
        r.candidate_pairs,
        r.suspect_pairs,
        if r.oversized_blocks > 0 {
            format!(", {} blocks too large to compare", r.oversized_blocks)
        } else {
            String::new()
        },
        args.output.display()
    );
    Ok(())
}
