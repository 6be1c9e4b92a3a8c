//! `custlake audit verify|flush`: the hash-chained audit trail.

use clap::Subcommand;

use super::CliError;
use crate::lake::Warehouse;
use crate::security::{Security, audit, audit_table};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the chain of every record (the audit_log table, then the
    /// journal not yet moved into it); names the first broken link.
    Verify,
    /// Move the journal's records into the audit_log table now.
    Flush,
}

pub(super) async fn run(
    wh: &Warehouse,
    security: &Security,
    command: &AuditCommand,
) -> Result<(), CliError> {
    let Some(journal) = &security.journal else {
        return Err(CliError::Usage(
            "auditing is off (security.audit.enabled = false)".into(),
        ));
    };
    match command {
        AuditCommand::Flush => {
            let n = audit_table::flush(&wh.lake, &wh.catalog, journal.dir())
                .await
                .map_err(CliError::Security)?;
            println!("{n} audit record(s) moved into audit_log");
            Ok(())
        }
        AuditCommand::Verify => {
            let ctx = crate::query::context(&wh.config)?;
            let names = crate::query::register_lake(&ctx, &wh.lake, &wh.catalog, None).await?;
            let table = if names.iter().any(|n| n == "audit_log") {
                let batches = ctx
                    .sql("SELECT * FROM audit_log ORDER BY seq")
                    .await
                    .map_err(crate::query::QueryError::from)?
                    .collect()
                    .await
                    .map_err(crate::query::QueryError::from)?;
                audit_table::records(&batches).map_err(CliError::Security)?
            } else {
                Vec::new()
            };
            let pending = journal.dir().pending().map_err(CliError::Security)?;
            let written = journal.dir().sealed_seq().map_err(CliError::Security)?;
            let v = audit::verify(table, pending, written);
            match &v.broken {
                None => {
                    println!(
                        "audit trail verified: {} record(s), {} to {}{}",
                        v.records,
                        v.first_seq,
                        v.last_seq,
                        if v.first_seq > 1 {
                            " (earlier records purged by retention)"
                        } else {
                            ""
                        }
                    );
                    Ok(())
                }
                Some(b) => Err(CliError::AuditBroken(format!(
                    "the audit trail is broken at record {} (event {}): {}",
                    b.seq, b.event_id, b.why
                ))),
            }
        }
    }
}
