use clap::Args;

use super::CliError;
use crate::schema::Catalog;

#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// A table name; without it, every table is listed.
    pub table: Option<String>,
    /// Print the source-system mappings instead.
    #[arg(long, conflicts_with = "table")]
    pub sources: bool,
}

pub(super) fn run(args: &SchemaArgs) -> Result<(), CliError> {
    let catalog = Catalog::embedded()?;
    if args.sources {
        for s in &catalog.sources {
            println!(
                "{} — {} (survivorship priority {})",
                s.system, s.title, s.priority
            );
            for e in &s.entities {
                println!(
                    "  {:<12} → {:<16} {} ({}, {}), dates {}",
                    e.name,
                    e.table,
                    e.file,
                    format!("{:?}", e.format).to_lowercase(),
                    format!("{:?}", e.encoding).to_lowercase(),
                    e.date_formats.join(" | ")
                );
                for (field, column) in &e.columns {
                    let codes = e
                        .codes
                        .get(field)
                        .map(|m| {
                            let pairs: Vec<String> =
                                m.iter().map(|(k, v)| format!("{k}→{v}")).collect();
                            format!("  codes: {}", pairs.join(", "))
                        })
                        .unwrap_or_default();
                    println!("      {column:<16} → {field}{codes}");
                }
            }
        }
        return Ok(());
    }
    match &args.table {
        Some(name) => print!("{}", catalog.describe_table(catalog.table(name)?)),
        None => {
            let mut t = comfy_table::Table::new();
            t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
            t.set_header([
                "table",
                "key",
                "partitioned by",
                "tiered",
                "fields",
                "description",
            ]);
            for d in &catalog.tables {
                t.add_row([
                    d.name.clone(),
                    d.key.join(", "),
                    d.partition
                        .as_ref()
                        .map(|p| p.column.clone())
                        .unwrap_or_else(|| "—".into()),
                    if d.tiered { "yes".into() } else { "no".into() },
                    d.fields.len().to_string(),
                    d.description.clone(),
                ]);
            }
            println!("{t}");
            println!(
                "`custlake schema TABLE` shows a table's fields; `custlake schema --sources` the source mappings."
            );
        }
    }
    Ok(())
}
