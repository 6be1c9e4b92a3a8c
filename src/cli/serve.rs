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
/// Example requests that work against a running server, with a token in
/// `$CUSTLAKE_TOKEN` (`custlake token create --user you --role admin`).
pub(super) fn curl_examples(scheme: &str, addr: &str) -> String {
    let auth = "-H \"authorization: Bearer $CUSTLAKE_TOKEN\"";
    format!(
        "  curl -s {scheme}://{addr}/healthz\n  curl -s {scheme}://{addr}/v1/tables {auth}\n  curl -s -X POST {scheme}://{addr}/v1/query {auth} -H 'content-type: application/json' \\\n       -d '{{\"sql\": \"SELECT product_line, count(*) AS policies FROM policy GROUP BY 1 ORDER BY 2 DESC\"}}'\n  curl -s -X POST '{scheme}://{addr}/v1/query?format=csv' {auth} -H 'content-type: application/json' \\\n       -d '{{\"sql\": \"SELECT * FROM policy WHERE status = $status\", \"params\": {{\"status\": \"active\"}}, \"limit\": 5}}'\n  curl -s {scheme}://{addr}/v1/customers/CU0000000001/lineage {auth}\n  curl -s '{scheme}://{addr}/v1/suspects?limit=3' {auth}\n"
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
    let scheme = if app.is_tls() { "https" } else { "http" };
    eprintln!(
        "custlake is serving on {scheme}://{addr} (Ctrl-C to stop). Every route but /healthz and /readyz needs a token:\n  export CUSTLAKE_TOKEN=$(custlake token create --user $USER --role admin | tail -1)\nThen try:\n{}",
        curl_examples(scheme, &addr)
    );
    if let Some(pg) = app.pg_addr() {
        eprintln!(
            "PostgreSQL clients connect on {pg} with their user name and token as password:\n  PGPASSWORD=$CUSTLAKE_TOKEN psql \"host={} port={} user=$USER dbname=custlake{}\"",
            pg.ip(),
            pg.port(),
            if app.is_tls() { " sslmode=require" } else { "" }
        );
    }
    if let Some(f) = app.flight_addr() {
        eprintln!(
            "Arrow Flight SQL clients connect to grpc://{f} with a bearer token (or user name and token by basic auth):\n  python3 -c \"import adbc_driver_flightsql.dbapi as f; c = f.connect('grpc://{f}', db_kwargs={{'username': '$USER', 'password': '$CUSTLAKE_TOKEN'}}); print(c.cursor().execute('SELECT 1').fetch_arrow_table())\""
        );
    }
    app.run_until_stopped().await?;
    Ok(())
}
