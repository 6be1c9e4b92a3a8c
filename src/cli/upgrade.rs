//! `custlake upgrade`: add what a newer custlake stores to a lake an older
//! one wrote (see `crate::lake::upgrade`).

use clap::Args;

use super::CliError;
use crate::lake::Warehouse;
use crate::lake::upgrade::{self, Part};

#[derive(Debug, Args)]
pub struct UpgradeArgs {
    /// Print what would be rewritten; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn print(parts: &[Part], verb: &str) {
    println!(
        "{:<16} {:<5} {:>12} {:>7}",
        "table", "tier", "rows", "files"
    );
    for p in parts {
        println!(
            "{:<16} {:<5} {:>12} {:>7}",
            p.table, p.tier, p.rows, p.files
        );
    }
    let rows: u64 = parts.iter().map(|p| p.rows).sum();
    println!(
        "{} table parts {verb} ({rows} rows): source_key added",
        parts.len()
    );
}

pub(super) async fn run(wh: &Warehouse, args: &UpgradeArgs) -> Result<(), CliError> {
    let parts = if args.dry_run {
        upgrade::plan(&wh.lake, &wh.catalog).await?
    } else {
        upgrade::apply(&wh.lake, &wh.catalog).await?
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&parts)?);
    } else if parts.is_empty() {
        println!("the lake is up to date: nothing to upgrade");
    } else {
        print(
            parts.as_slice(),
            if args.dry_run {
                "to rewrite"
            } else {
                "rewritten"
            },
        );
    }
    Ok(())
}
