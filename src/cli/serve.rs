use clap::Args;

use super::CliError;
use crate::lake::Warehouse;
use crate::server::Application;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (default: server.bind in the config).
    #[arg(long)]
    pub bind: Option<String>,
}

/// Example requests that work against a running server.
pub(super) fn curl_examples(addr: &str) -> String {
    format!(
        "  curl -s http://{addr}/healthz\n  curl -s http://{addr}/v1/tables\n  curl -s -X POST http://{addr}/v1/query -H 'content-type: application/json' \\\n       -d '{{\"sql\": \"SELECT product_line, count(*) AS policies FROM policy GROUP BY 1 ORDER BY 2 DESC\"}}'\n  curl -s -X POST 'http://{addr}/v1/query?format=csv' -H 'content-type: application/json' \\\n       -d '{{\"sql\": \"SELECT * FROM policy WHERE status = $status\", \"params\": {{\"status\": \"active\"}}, \"limit\": 5}}'\n  curl -s http://{addr}/v1/customers/CU0000000001/lineage\n  curl -s 'http://{addr}/v1/suspects?limit=3'\n"
    )
}

pub(super) async fn run(wh: &Warehouse, args: &ServeArgs) -> Result<(), CliError> {
    let bind = args
        .bind
        .clone()
        .unwrap_or_else(|| wh.config.server.bind.clone());
    // The server logs progress rather than drawing bars.
    let mut wh = wh.clone();
    wh.progress = std::sync::Arc::new(crate::progress::Logged);
    wh.lake = wh.lake.with_progress(wh.progress.clone());
    let app = Application::build(wh, &bind).await?;
    let addr = app.local_addr().to_string();
    eprintln!(
        "custlake is serving on http://{addr} (Ctrl-C to stop). Try:\n{}",
        curl_examples(&addr)
    );
    app.run_until_stopped().await?;
    Ok(())
}
