//! One statement as one Ballista job: submit the planned statement, wait
//! for the job, stream its result partitions from the executors. A job
//! whose statement is dropped before the job ended (its timeout fired, its
//! client hung up) is cancelled on the scheduler.

use std::sync::Arc;
use std::time::Duration;

use ballista_core::client::BallistaClient;
use ballista_core::config::BallistaConfig;
use ballista_core::serde::protobuf::execute_query_params::Query;
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use ballista_core::serde::protobuf::{
    CancelJobParams, ExecuteQueryParams, GetJobStatusParams, KeyValuePair, PartitionLocation,
    execute_query_result, job_status,
};
use ballista_core::utils::{GrpcClientConfig, create_grpc_client_endpoint};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionConfig;
use datafusion_proto::physical_plan::AsExecutionPlan;
use datafusion_proto::protobuf::PhysicalPlanNode;
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use tonic::transport::Channel;

use super::ClusterCodec;

fn failed(what: &str, e: impl std::fmt::Debug) -> DataFusionError {
    DataFusionError::Execution(format!("{what}: {e:?}"))
}

/// Cancels the job when dropped before [`Cancel::done`].
struct Cancel {
    scheduler: Option<SchedulerGrpcClient<Channel>>,
    job_id: String,
}

impl Cancel {
    fn done(&mut self) {
        self.scheduler = None;
    }
}

impl Drop for Cancel {
    fn drop(&mut self) {
        if let Some(mut scheduler) = self.scheduler.take() {
            let job_id = std::mem::take(&mut self.job_id);
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let mut request = tonic::Request::new(CancelJobParams {
                        job_id: job_id.clone(),
                    });
                    ballista_core::version::insert_version_header(request.metadata_mut());
                    match scheduler.cancel_job(request).await {
                        Ok(_) => tracing::info!(job = %job_id, "cancelled a cluster job its statement left"),
                        Err(e) => tracing::warn!(job = %job_id, "cannot cancel a cluster job: {e}"),
                    }
                });
            }
        }
    }
}

/// A fresh operation id.
fn operation_id() -> String {
    let mut b = [0u8; 16];
    let _ = getrandom_02::getrandom(&mut b);
    hex::encode(b)
}

/// Run `plan` on the cluster of `scheduler` as one job; its rows.
pub(super) async fn run(
    scheduler: String,
    plan: Arc<dyn ExecutionPlan>,
    codec: Arc<ClusterCodec>,
    session_id: String,
    config: SessionConfig,
) -> Result<SendableRecordBatchStream> {
    use ballista_core::extension::SessionConfigExt;
    let schema = plan.schema();
    let ballista: BallistaConfig = config.ballista_config();
    let grpc = GrpcClientConfig::from(&ballista);
    let max_message = ballista.grpc_client_max_message_size();
    let encoded = PhysicalPlanNode::try_from_physical_plan(plan, codec.as_ref())
        .map_err(|e| failed("cannot encode the plan for the cluster", e))?
        .encode_to_vec();
    let settings = config
        .options()
        .entries()
        .into_iter()
        .map(|e| KeyValuePair {
            key: e.key,
            value: e.value,
        })
        .collect();
    let channel = create_grpc_client_endpoint(scheduler.clone(), Some(&grpc))
        .map_err(|e| failed("the scheduler's address", e))?
        .connect()
        .await
        .map_err(|e| {
            use std::error::Error;
            let mut cause = e.to_string();
            let mut source = e.source();
            while let Some(s) = source {
                cause = s.to_string();
                source = s.source();
            }
            DataFusionError::Execution(format!("tcp connect error: {cause}"))
        })?;
    let mut client = SchedulerGrpcClient::new(channel)
        .max_encoding_message_size(max_message)
        .max_decoding_message_size(max_message);
    let mut request = tonic::Request::new(ExecuteQueryParams {
        query: Some(Query::PhysicalPlan(encoded)),
        settings,
        session_id,
        operation_id: operation_id(),
    });
    ballista_core::version::insert_version_header(request.metadata_mut());
    let submitted = client
        .execute_query(request)
        .await
        .map_err(|e| failed("the scheduler refused the job", e))?
        .into_inner();
    let job_id = match submitted.result {
        Some(execute_query_result::Result::Success(s)) => s.job_id,
        Some(execute_query_result::Result::Failure(f)) => {
            return Err(failed("the scheduler refused the job", f));
        }
        None => return Err(failed("the scheduler answered nothing", "")),
    };
    let mut cancel = Cancel {
        scheduler: Some(client.clone()),
        job_id: job_id.clone(),
    };
    // Short jobs answer within milliseconds: the first polls are close.
    let mut wait = Duration::from_millis(5);
    // A scheduler that no longer knows the job (it restarted) answers no
    // status, as for a job not yet planned: a minute of that is a loss.
    let mut unknown = 0u32;
    let locations: Vec<PartitionLocation> = loop {
        let status = client
            .get_job_status(GetJobStatusParams {
                job_id: job_id.clone(),
            })
            .await
            .map_err(|e| failed("the scheduler", e))?
            .into_inner()
            .status
            .and_then(|s| s.status);
        match status {
            Some(job_status::Status::Successful(s)) => {
                cancel.done();
                if tracing::enabled!(tracing::Level::INFO) {
                    log_split(
                        &mut client,
                        &job_id,
                        s.ended_at.saturating_sub(s.started_at),
                    )
                    .await;
                }
                break s.partition_location;
            }
            Some(job_status::Status::Failed(f)) => {
                cancel.done();
                return Err(DataFusionError::Execution(format!(
                    "Job {job_id} failed: {}",
                    f.error
                )));
            }
            None => {
                unknown += 1;
                if unknown > 1200 {
                    return Err(DataFusionError::Execution(format!(
                        "the scheduler has not known job {job_id} for a minute (did it restart?)"
                    )));
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_millis(50));
            }
            Some(_) => {
                unknown = 0;
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_millis(50));
            }
        }
    };
    let retries = grpc.io_retries_times;
    let retry_wait = grpc.io_retry_wait_time_ms;
    let parts = locations.into_iter().map(move |location| {
        futures::stream::once(fetch(location, max_message, retries, retry_wait)).try_flatten()
    });
    let stream = futures::stream::iter(parts).flatten();
    Ok(Box::pin(
        datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(schema, stream.boxed()),
    ))
}

/// How a finished job split (its stages, tasks and shuffle), logged at
/// `info` (`CUSTLAKE_LOG=info`), from the scheduler's metrics of the job.
async fn log_split(client: &mut SchedulerGrpcClient<Channel>, job_id: &str, ms: u64) {
    use ballista_core::serde::protobuf::GetJobMetricsParams;
    use ballista_core::serde::protobuf::operator_metric::Metric;
    let Ok(metrics) = client
        .get_job_metrics(GetJobMetricsParams {
            job_id: job_id.to_string(),
        })
        .await
    else {
        return;
    };
    let stages = metrics.into_inner().stages;
    let tasks: u32 = stages.iter().map(|s| s.partitions).sum();
    let (mut rows, mut bytes) = (0u64, 0u64);
    for op in stages.iter().flat_map(|s| &s.operators) {
        if !op.operator_type.contains("ShuffleWriter") {
            continue;
        }
        for m in op.metrics.iter().filter_map(|m| m.metric.as_ref()) {
            match m {
                Metric::OutputRows(n) => rows += n,
                Metric::Count(c) if c.name.contains("bytes") => bytes += c.value,
                _ => {}
            }
        }
    }
    tracing::info!(
        job = %job_id,
        stages = stages.len(),
        tasks,
        shuffled_rows = rows,
        shuffled_bytes = bytes,
        job_ms = ms,
        "cluster job finished"
    );
}

/// One result partition, from the executor that holds it.
async fn fetch(
    location: PartitionLocation,
    max_message: usize,
    retries: u8,
    retry_wait_ms: u64,
) -> Result<SendableRecordBatchStream> {
    let layout = location.layout();
    let meta = location.executor_meta.ok_or_else(|| {
        DataFusionError::Internal("a result partition without its executor".into())
    })?;
    let partition = location
        .partition_id
        .ok_or_else(|| DataFusionError::Internal("a result partition without its id".into()))?;
    let port = u16::try_from(meta.port)
        .map_err(|_| DataFusionError::Internal(format!("executor port {}", meta.port)))?;
    let mut client = BallistaClient::try_new(
        &meta.host,
        port,
        max_message,
        false,
        None,
        retries,
        retry_wait_ms,
        0,
        0,
    )
    .await
    .map_err(|e| failed("an executor", e))?;
    client
        .fetch_partition_proxied(
            &meta.id,
            &partition.into(),
            location.file_id,
            layout,
            &meta.host,
            port,
            true,
        )
        .await
        .map_err(|e| e.into_datafusion())
}
