//! The physical codec of custlake's plan nodes: a table's tier scans
//! ([`TierScanExec`]: per tier the table, tier, version, projection,
//! filters and limit, the statistics the planner saw, and the files each
//! partition reads; in a scheduler, as its [`carrier`](super::carrier))
//! and a secured view ([`FencedExec`]: its whole plan, masks and row
//! filter included, as DataFusion's own plan messages). Every other node
//! goes to Ballista's codec, and through it to DataFusion's.
//!
//! A custlake node is framed `CLK2` (since tier scans list their files),
//! a kind byte, then length-prefixed
//! parts; Ballista's nodes are protobuf messages, which never start so.

use std::sync::Arc;

use ballista_core::serde::BallistaPhysicalExtensionCodec;
use datafusion::arrow::datatypes::Schema;
use datafusion::common::{DataFusionError, Result, Statistics};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::ScalarUDF;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::logical_plan::DefaultLogicalExtensionCodec;
use datafusion_proto::logical_plan::from_proto::parse_exprs;
use datafusion_proto::logical_plan::to_proto::serialize_exprs;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use datafusion_proto::protobuf::{LogicalExprList, PhysicalPlanNode};
use prost::Message;

use datafusion_proto::physical_plan::PhysicalPlanNodeExt as _;

use serde::{Deserialize, Serialize};

use super::OneTaskExec;
use super::carrier;
use super::scan::{Groups, Part, Replanner, ScanSpec, TierScanExec};
use crate::security::FencedExec;

const MAGIC: &[u8; 4] = b"CLK2";
const TIER_SCAN: u8 = 1;
const FENCED: u8 = 2;
const ONE_TASK: u8 = 3;

/// custlake's nodes, then Ballista's. Decoding a tier scan needs the lake
/// (`replanner`); a process that only encodes (the server) has none.
#[derive(Debug)]
pub struct ClusterCodec {
    ballista: BallistaPhysicalExtensionCodec,
    replanner: Option<Arc<Replanner>>,
    /// A scheduler's: tier scans decode to their carriers, which Ballista
    /// cuts into tasks (see `scan`).
    scheduler: bool,
}

impl ClusterCodec {
    /// The codec of a process that sends plans (the server, the CLI).
    pub fn sender() -> Self {
        Self {
            ballista: BallistaPhysicalExtensionCodec::default(),
            replanner: None,
            scheduler: false,
        }
    }

    /// The codec of a process that receives plans (scheduler, executor).
    pub fn receiver(replanner: Arc<Replanner>) -> Self {
        Self {
            ballista: BallistaPhysicalExtensionCodec::default(),
            replanner: Some(replanner),
            scheduler: false,
        }
    }

    /// This codec as a scheduler's.
    pub fn for_scheduler(&self) -> Self {
        Self {
            ballista: BallistaPhysicalExtensionCodec::default(),
            replanner: self.replanner.clone(),
            scheduler: true,
        }
    }
}

fn bad(what: &str) -> DataFusionError {
    DataFusionError::Internal(format!("custlake plan node: {what}"))
}

fn put(out: &mut Vec<u8>, part: &[u8]) {
    out.extend_from_slice(&(part.len() as u32).to_le_bytes());
    out.extend_from_slice(part);
}

/// The length-prefixed parts after the kind byte.
fn parts(mut buf: &[u8]) -> Result<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let (len, rest) = buf
            .split_first_chunk::<4>()
            .ok_or_else(|| bad("a part's length is cut"))?;
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return Err(bad("a part is cut"));
        }
        out.push(&rest[..len]);
        buf = &rest[len..];
    }
    Ok(out)
}

fn proto_err(e: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Internal(format!("custlake plan node: {e}"))
}

/// A tier scan's partitions: the files each reads, and a limit pushed
/// into it.
#[derive(Debug, Serialize, Deserialize)]
struct Layout {
    groups: Groups,
    fetch: Option<usize>,
}

/// A tier scan of `parts` (the schema of `node`): its schema, statistics,
/// layout, then each part's spec and filters.
fn encode_scan(
    buf: &mut Vec<u8>,
    node: &Arc<dyn ExecutionPlan>,
    parts: &[Part],
    statistics: &Statistics,
    layout: &Layout,
) -> Result<()> {
    let schema = datafusion_proto::protobuf::Schema::try_from(node.schema().as_ref())
        .map_err(proto_err)?
        .encode_to_vec();
    let statistics =
        datafusion_proto_common::protobuf_common::Statistics::from(statistics).encode_to_vec();
    buf.extend_from_slice(MAGIC);
    buf.push(TIER_SCAN);
    put(buf, &schema);
    put(buf, &statistics);
    put(buf, &serde_json::to_vec(layout).map_err(proto_err)?);
    for part in parts {
        let spec = serde_json::to_vec(&part.spec).map_err(proto_err)?;
        let filters = LogicalExprList {
            expr: serialize_exprs(&part.filters, &DefaultLogicalExtensionCodec {})
                .map_err(proto_err)?,
        }
        .encode_to_vec();
        put(buf, &spec);
        put(buf, &filters);
    }
    Ok(())
}

impl PhysicalExtensionCodec for ClusterCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(rest) = buf.strip_prefix(MAGIC) else {
            return self.ballista.try_decode(buf, inputs, ctx, converter);
        };
        let (kind, rest) = rest.split_first().ok_or_else(|| bad("no kind"))?;
        let parts = parts(rest)?;
        match (*kind, parts.as_slice()) {
            (TIER_SCAN, [schema, statistics, layout, scans @ ..])
                if scans.len() % 2 == 0 && !scans.is_empty() =>
            {
                let replanner = self.replanner.clone().ok_or_else(|| {
                    bad("a tier scan reached a process that has no lake to read it from")
                })?;
                let schema =
                    datafusion_proto::protobuf::Schema::decode(*schema).map_err(proto_err)?;
                let schema = Arc::new(Schema::try_from(&schema).map_err(proto_err)?);
                let statistics =
                    datafusion_proto_common::protobuf_common::Statistics::decode(*statistics)
                        .map_err(proto_err)?;
                let statistics = Statistics::try_from(&statistics)?;
                let layout: Layout = serde_json::from_slice(layout).map_err(proto_err)?;
                let mut parts = Vec::with_capacity(scans.len() / 2);
                for pair in scans.chunks(2) {
                    let spec: ScanSpec = serde_json::from_slice(pair[0]).map_err(proto_err)?;
                    let filters = LogicalExprList::decode(pair[1]).map_err(proto_err)?;
                    let filters = parse_exprs(&filters.expr, ctx, &DefaultLogicalExtensionCodec {})
                        .map_err(proto_err)?;
                    parts.push(Part { spec, filters });
                }
                Ok(match (self.scheduler, layout.groups) {
                    // For Ballista to cut into tasks.
                    (true, Some(groups)) => {
                        carrier::carry(parts, schema, statistics, groups, layout.fetch)?
                    }
                    (_, groups) => Arc::new(TierScanExec::decoded(
                        parts,
                        schema,
                        statistics,
                        groups,
                        layout.fetch,
                        replanner,
                    )),
                })
            }
            (FENCED | ONE_TASK, [plan]) => {
                let plan = PhysicalPlanNode::decode(*plan).map_err(proto_err)?;
                let inner = plan.try_into_physical_plan_with_converter(ctx, self, converter)?;
                Ok(if *kind == FENCED {
                    Arc::new(FencedExec::new(inner))
                } else {
                    Arc::new(OneTaskExec::decoded(inner))
                })
            }
            (k, p) => Err(bad(&format!("kind {k} with {} parts", p.len()))),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        if let Some(scan) = node.downcast_ref::<TierScanExec>() {
            let layout = Layout {
                groups: scan.groups().clone(),
                fetch: scan.fetch(),
            };
            return encode_scan(buf, &node, scan.parts(), scan.statistics(), &layout);
        }
        if let Some(carried) = carrier::carried(node.as_ref()) {
            // A task's cut of a tier scan: the groups Ballista left it.
            let carried = carried?;
            let layout = Layout {
                groups: Some(carried.groups),
                fetch: carried.fetch,
            };
            return encode_scan(buf, &node, carried.parts, carried.statistics, &layout);
        }
        let whole = match (
            node.downcast_ref::<FencedExec>(),
            node.downcast_ref::<OneTaskExec>(),
        ) {
            (Some(f), _) => Some((FENCED, f.inner())),
            (_, Some(w)) => Some((ONE_TASK, w.inner())),
            _ => None,
        };
        if let Some((kind, inner)) = whole {
            let plan = PhysicalPlanNode::try_from_physical_plan_with_converter(
                inner.clone(),
                self,
                converter,
            )?
            .encode_to_vec();
            buf.extend_from_slice(MAGIC);
            buf.push(kind);
            put(buf, &plan);
            return Ok(());
        }
        self.ballista.try_encode(node, buf, converter)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        self.ballista.try_decode_udf(name, buf)
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.ballista.try_encode_udf(node, buf)
    }
}
