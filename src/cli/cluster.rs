//! `custlake scheduler` and `custlake executor`: the processes of an Apache
//! Ballista cluster over this configuration's lake. Each loads the same
//! configuration as the server (the lake's tier roots and S3 settings, the
//! mask salt), registers custlake's functions and its plan codec, and runs
//! until it is stopped.

use std::net::SocketAddr;

use clap::Args;

use super::CliError;
use crate::lake::Warehouse;
use crate::query::cluster::{ExecutorSettings, Member, run_executor, run_scheduler};

#[derive(Debug, Args)]
pub struct SchedulerArgs {
    /// Address to listen on for clients and executors.
    #[arg(long, default_value = "127.0.0.1:50050")]
    pub bind: SocketAddr,
    /// The host name executors and clients reach this scheduler by
    /// (default: the bind address's host).
    #[arg(long, value_name = "HOST")]
    pub external_host: Option<String>,
    /// An executor silent for this long is taken for lost and its tasks
    /// run elsewhere (executors send a heartbeat every --heartbeat-seconds).
    #[arg(long, value_name = "SECONDS", default_value_t = 20)]
    pub executor_timeout_seconds: u64,
}

#[derive(Debug, Args)]
pub struct ExecutorArgs {
    /// The scheduler, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    pub scheduler: String,
    /// Address of this executor's Arrow Flight service (other executors
    /// and clients fetch shuffle and result partitions from it).
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub bind: SocketAddr,
    /// Port of this executor's gRPC service (the scheduler's task calls).
    #[arg(long, default_value_t = 50052)]
    pub grpc_port: u16,
    /// The host name others reach this executor by (default: the bind
    /// address's host).
    #[arg(long, value_name = "HOST")]
    pub external_host: Option<String>,
    /// Where shuffle files are written (default: a new temporary
    /// directory).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<String>,
    /// Tasks run at once (default: one per core).
    #[arg(long, value_name = "N")]
    pub concurrent_tasks: Option<usize>,
    /// Seconds between heartbeats to the scheduler (keep it well under the
    /// scheduler's --executor-timeout-seconds).
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    pub heartbeat_seconds: u64,
}

pub(super) async fn scheduler(wh: &Warehouse, args: &SchedulerArgs) -> Result<(), CliError> {
    let member = Member::new(&wh.config, &wh.lake, wh.catalog.clone()).await?;
    let host = args
        .external_host
        .clone()
        .unwrap_or_else(|| args.bind.ip().to_string());
    eprintln!(
        "custlake scheduler on {} (lake {}); start executors with\n  custlake executor --scheduler {host}:{}\nand set server.engine = \"ballista\", server.scheduler_url = \"{host}:{}\"",
        args.bind,
        wh.config.lake,
        args.bind.port(),
        args.bind.port()
    );
    run_scheduler(member, args.bind, &host, args.executor_timeout_seconds).await?;
    Ok(())
}

pub(super) async fn executor(wh: &Warehouse, args: &ExecutorArgs) -> Result<(), CliError> {
    let member = Member::new(&wh.config, &wh.lake, wh.catalog.clone()).await?;
    let settings = ExecutorSettings {
        scheduler: args.scheduler.clone(),
        bind: args.bind,
        grpc_port: args.grpc_port,
        external_host: args.external_host.clone(),
        work_dir: args.work_dir.clone(),
        concurrent_tasks: args
            .concurrent_tasks
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
        heartbeat_s: args.heartbeat_seconds,
    };
    eprintln!(
        "custlake executor on {} (gRPC port {}) for the scheduler at {}, {} task(s) at once",
        args.bind, args.grpc_port, args.scheduler, settings.concurrent_tasks
    );
    run_executor(member, &settings).await?;
    Ok(())
}
