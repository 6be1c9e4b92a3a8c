//! `custlake tier plan|apply|status` and `custlake hold add|remove|list`.

use chrono::NaiveDate;
use clap::{Args, Subcommand};

use super::CliError;
use crate::lake::Warehouse;
use crate::lake::catalog::{self, Hold};
use crate::lake::tiers::{self, Move, TablePlan};

#[derive(Debug, Subcommand)]
pub enum TierCommand {
    /// Print what `tier apply` would move, purge or compact; changes nothing.
    Plan(PlanArgs),
    /// Move partitions to the tiers their age puts them in, purge what is
    /// past retention (except under legal hold), compact partitions of many
    /// small files ([tiers] compact_min_files), vacuum removed files.
    Apply(PlanArgs),
    /// Per table and tier: the partition range it owns, rows, files, bytes.
    Status(JsonArg),
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The date ages are counted from (default: today).
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub as_of: Option<NaiveDate>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct JsonArg {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum HoldCommand {
    /// Put partitions of a table (or of every tiered table), or one
    /// customer's rows, under legal hold.
    Add(HoldAddArgs),
    /// Lift a hold.
    Remove {
        /// The hold's id (`hold list` shows it).
        id: String,
    },
    /// List the holds in force.
    List(JsonArg),
}

#[derive(Debug, Args)]
pub struct HoldAddArgs {
    /// The table (default: every tiered table).
    #[arg(long)]
    pub table: Option<String>,
    /// First month held, YYYY-MM.
    #[arg(long, value_name = "YYYY-MM")]
    pub from: Option<String>,
    /// Last month held, YYYY-MM (inclusive).
    #[arg(long, value_name = "YYYY-MM")]
    pub to: Option<String>,
    /// A golden customer id: the rows of all its source records are held.
    #[arg(long, conflicts_with_all = ["from", "to"])]
    pub customer: Option<String>,
    /// Why (a case number, a regulator's request).
    #[arg(long)]
    pub reason: String,
    /// Who asks for it.
    #[arg(long, default_value = "cli")]
    pub by: String,
}

fn as_of(d: Option<NaiveDate>) -> NaiveDate {
    d.unwrap_or_else(|| chrono::Utc::now().date_naive())
}

fn range(m: &Move) -> String {
    format!(
        "{}..{}",
        m.lo.as_deref().unwrap_or("start"),
        m.hi.as_deref().unwrap_or("end")
    )
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

fn print_plan(plans: &[TablePlan]) {
    let mut any = false;
    println!(
        "{:<16} {:<20} {:>12} {:>7} {:>11}  from → to",
        "table", "partitions", "rows", "files", "bytes"
    );
    for p in plans {
        for m in p.leftovers.iter().chain(&p.moves) {
            if m.extent.files == 0 {
                continue;
            }
            any = true;
            let to = match (m.to, p.leftovers.iter().any(|l| std::ptr::eq(l, m))) {
                (_, true) => "removed (leftover of an interrupted move)".to_string(),
                (Some(t), _) => t.name().to_string(),
                (None, _) => "purged (past retention; held rows kept)".to_string(),
            };
            println!(
                "{:<16} {:<20} {:>12} {:>7} {:>11}  {} → {}",
                p.table,
                range(m),
                m.extent.rows,
                m.extent.files,
                mib(m.extent.bytes),
                m.from.name(),
                to
            );
        }
        for c in &p.compactions {
            any = true;
            println!(
                "{:<16} {:<20} {:>12} {:>7} {:>11}  {} → compacted (rewritten in cluster order)",
                p.table,
                c.partition,
                c.rows,
                c.files,
                mib(c.bytes),
                c.tier.name()
            );
        }
        if (&p.target.warm_before, &p.target.cold_before)
            != (&p.current.warm_before, &p.current.cold_before)
        {
            println!(
                "{:<16} watermarks: warm_before {} → {}, cold_before {} → {}",
                p.table,
                p.current.warm_before.as_deref().unwrap_or("-"),
                p.target.warm_before.as_deref().unwrap_or("-"),
                p.current.cold_before.as_deref().unwrap_or("-"),
                p.target.cold_before.as_deref().unwrap_or("-"),
            );
        }
    }
    if !any {
        println!("nothing to move, purge or compact");
    }
}

pub(super) async fn run(wh: &Warehouse, c: &TierCommand) -> Result<(), CliError> {
    let (lake, catalog) = (&wh.lake, wh.catalog.as_ref());
    match c {
        TierCommand::Plan(a) => {
            let plans = tiers::plan(lake, catalog, as_of(a.as_of)).await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&plans)?);
            } else {
                print_plan(&plans);
            }
        }
        TierCommand::Apply(a) => {
            let out = tiers::apply_due(lake, catalog, as_of(a.as_of), wh.progress.as_ref())
                .await
                .map_err(|e| CliError::Interrupted {
                    message: "the move stopped part-way; nothing is lost and `custlake tier apply` finishes it",
                    source: Box::new(e.into()),
                })?;
            if out.tables == 0 && !a.json {
                println!("nothing to move, purge or compact");
                return Ok(());
            }
            if a.json {
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                println!(
                    "{} tables: {} ranges moved ({} rows, {} read, {} written), {} rows purged, {} leftovers removed, {} partitions compacted ({} files{}), {} files vacuumed in {:.1} s",
                    out.tables,
                    out.ranges_moved,
                    out.rows_moved,
                    mib(out.bytes_read),
                    mib(out.bytes_written),
                    out.rows_purged,
                    out.leftovers_removed,
                    out.partitions_compacted,
                    out.files_compacted,
                    match out.compactions_failed {
                        0 => String::new(),
                        n => format!("; {n} failed and left as they were: see the log"),
                    },
                    out.files_vacuumed,
                    out.seconds
                );
            }
        }
        TierCommand::Status(a) => {
            let rows = tiers::status(lake, catalog).await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(());
            }
            println!(
                "{:<16} {:<5} {:<20} {:<20} {:>12} {:>7} {:>11}",
                "table", "tier", "owns", "holds", "rows", "files", "bytes"
            );
            for s in rows {
                let owns = if s.owns {
                    format!(
                        "{}..{}",
                        s.range_from.as_deref().unwrap_or("start"),
                        s.range_before.as_deref().unwrap_or("end")
                    )
                } else {
                    "nothing yet".into()
                };
                let holds = match (&s.extent.first, &s.extent.last) {
                    (Some(f), Some(l)) => format!("{f}..{l}"),
                    _ => "-".into(),
                };
                println!(
                    "{:<16} {:<5} {:<20} {:<20} {:>12} {:>7} {:>11}",
                    s.table,
                    s.tier.name(),
                    owns,
                    holds,
                    s.extent.rows,
                    s.extent.files,
                    mib(s.extent.bytes)
                );
            }
        }
    }
    Ok(())
}

fn check_month(m: &Option<String>, what: &str) -> Result<(), CliError> {
    if let Some(m) = m
        && NaiveDate::parse_from_str(&format!("{m}-01"), "%Y-%m-%d").is_err()
    {
        return Err(CliError::Usage(format!(
            "--{what} {m:?}: expected a month as YYYY-MM"
        )));
    }
    Ok(())
}

pub(super) async fn hold(wh: &Warehouse, c: &HoldCommand) -> Result<(), CliError> {
    let lake = &wh.lake;
    let current = catalog::holds(lake).await?;
    match c {
        HoldCommand::Add(a) => {
            if let Some(t) = &a.table {
                let def = wh.catalog.table(t)?;
                if !def.tiered {
                    return Err(CliError::Usage(format!(
                        "{t} is not a tiered table: nothing of it is ever purged"
                    )));
                }
            }
            check_month(&a.from, "from")?;
            check_month(&a.to, "to")?;
            if a.customer.is_none() && a.from.is_none() && a.to.is_none() && a.table.is_none() {
                return Err(CliError::Usage(
                    "a hold names a table, a month range (--from/--to) or a customer (--customer)"
                        .into(),
                ));
            }
            if let (Some(f), Some(t)) = (&a.from, &a.to)
                && f > t
            {
                return Err(CliError::Usage(format!("--from {f} is after --to {t}")));
            }
            let mut holds = current.value.clone();
            let id = format!(
                "H{:04}",
                holds
                    .holds
                    .iter()
                    .filter_map(|h| h.id.trim_start_matches('H').parse::<u32>().ok())
                    .max()
                    .unwrap_or(0)
                    + 1
            );
            holds.holds.push(Hold {
                id: id.clone(),
                table: a.table.clone(),
                from: a.from.clone(),
                to: a.to.clone(),
                customer: a.customer.clone(),
                reason: a.reason.clone(),
                by: a.by.clone(),
                at: catalog::now(),
            });
            holds.at = catalog::now();
            catalog::set_holds(lake, current.version, &holds).await?;
            println!("hold {id} added");
        }
        HoldCommand::Remove { id } => {
            let mut holds = current.value.clone();
            let before = holds.holds.len();
            holds.holds.retain(|h| &h.id != id);
            if holds.holds.len() == before {
                return Err(CliError::Lake(crate::lake::LakeError::NotFound(format!(
                    "no hold {id} (see `custlake hold list`)"
                ))));
            }
            holds.at = catalog::now();
            catalog::set_holds(lake, current.version, &holds).await?;
            println!("hold {id} removed");
        }
        HoldCommand::List(a) => {
            if a.json {
                println!("{}", serde_json::to_string_pretty(&current.value.holds)?);
                return Ok(());
            }
            if current.value.holds.is_empty() {
                println!("no holds");
            }
            for h in &current.value.holds {
                let what = match (&h.customer, &h.table) {
                    (Some(c), _) => format!("customer {c}"),
                    (None, t) => format!(
                        "{} {}..{}",
                        t.as_deref().unwrap_or("every tiered table"),
                        h.from.as_deref().unwrap_or("start"),
                        h.to.as_deref().unwrap_or("end")
                    ),
                };
                println!("{}  {}  {} (by {}, {})", h.id, what, h.reason, h.by, h.at);
            }
        }
    }
    Ok(())
}
