//! [`HindcastCodec`]: hindcast's operators as bytes, so a plan made by one process runs in
//! another.
//!
//! DataFusion's protobuf carries its own nodes and expressions; this codec carries
//! hindcast's four: [`AsOfJoinExec`] and [`WindowAggregateExec`] with every option,
//! [`KeyTimeSortExec`] and [`SpineBoundsExec`]. Their expressions go through the converter the caller passes, so with
//! DataFusion's deduplicating converter (datafusion-distributed's) the dynamic filter a
//! join shares with its feature scan is one filter again after decoding: publishing the
//! spine's bounds still narrows the scan.
//!
//! A join's narrowing names its spine bounds by id ([`SpineBounds::id`]); decoding finds
//! them in the join's left input, which is decoded first. A plan cut between the two (a
//! stage boundary) decodes that join without narrowing, which is always correct: the
//! filters it would set start as `true`. Distributed, that is every join: the spine's
//! repartition, a stage boundary, sits above its `SpineBoundsExec`, and the feature scans
//! are in stages of their own; the coordinator sets the filters before the stages are
//! encoded instead (`bounds_first`), and they travel as their current expressions.
//!
//! Expressions nested in these nodes are encoded with this codec, not the caller's
//! composed one (a codec is handed only the task context): an expression that only another
//! codec knows (a user-defined function with a serialized definition) does not round-trip,
//! and fails to encode rather than decode differently. hindcast's own planning makes none.

use std::any::Any;
use std::sync::Arc;

use datafusion::arrow::datatypes::{Schema, TimeUnit};
use datafusion::common::{JoinSide, Result, internal_datafusion_err, internal_err, not_impl_err};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::expressions::DynamicFilterPhysicalExpr;
use datafusion::physical_expr::{LexOrdering, PhysicalExprRef};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion_proto::physical_plan::from_proto::parse_physical_sort_exprs;
use datafusion_proto::physical_plan::to_proto::serialize_physical_sort_exprs;
use datafusion_proto::physical_plan::{
    DeduplicatingProtoConverter, PhysicalExtensionCodec, PhysicalPlanDecodeContext,
    PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf::{PhysicalExprNode, PhysicalPlanNode, PhysicalSortExprNode};
use prost::{Message, Oneof};

use crate::features::{AggregateFunction, TimePartitioning};
use crate::logical::{AsOfJoinOptions, JoinMode, MatchOp, WindowAggregate, WindowAggregateOptions};
use crate::physical::key_time_sort::KeyTimeSortExec;
use crate::physical::spine_bounds::{Narrowing, PartitionFilter, SpineBounds, SpineBoundsExec};
use crate::physical::{AsOfJoinExec, WindowAggregateExec};
use crate::time::TimeDomain;

/// Encodes and decodes hindcast's physical operators (see the module documentation).
#[derive(Debug, Default, Clone, Copy)]
pub struct HindcastCodec;

/// `plan` as bytes, with DataFusion's deduplicating converter and [`HindcastCodec`].
pub fn encode_plan(plan: &Arc<dyn ExecutionPlan>) -> Result<Vec<u8>> {
    let node =
        DeduplicatingProtoConverter::default().execution_plan_to_proto(plan, &HindcastCodec)?;
    Ok(node.encode_to_vec())
}

/// The plan [`encode_plan`] wrote, with `context`'s functions, object stores and memory
/// limit.
pub fn decode_plan(bytes: &[u8], context: &TaskContext) -> Result<Arc<dyn ExecutionPlan>> {
    let node = PhysicalPlanNode::decode(bytes)
        .map_err(|e| internal_datafusion_err!("a hindcast plan that does not decode: {e}"))?;
    DeduplicatingProtoConverter::default().proto_to_execution_plan(
        &node,
        &PhysicalPlanDecodeContext::new(context, &HindcastCodec),
    )
}

#[derive(Clone, PartialEq, Message)]
struct PlanProto {
    #[prost(oneof = "NodeProto", tags = "1, 2, 3, 4")]
    node: Option<NodeProto>,
}

#[derive(Clone, PartialEq, Oneof)]
enum NodeProto {
    #[prost(message, tag = "1")]
    AsOfJoin(Box<AsOfJoinProto>),
    #[prost(message, tag = "2")]
    KeyTimeSort(KeyTimeSortProto),
    #[prost(message, tag = "3")]
    SpineBounds(Box<SpineBoundsProto>),
    #[prost(message, tag = "4")]
    WindowAggregate(Box<WindowAggregateProto>),
}

/// [`AsOfJoinOptions`] field by field; the small enums as their names (see `names`).
#[derive(Clone, PartialEq, Message)]
struct AsOfJoinProto {
    #[prost(message, repeated, tag = "1")]
    left_keys: Vec<PhysicalExprNode>,
    #[prost(message, repeated, tag = "2")]
    right_keys: Vec<PhysicalExprNode>,
    #[prost(message, optional, tag = "3")]
    left_time: Option<PhysicalExprNode>,
    #[prost(message, optional, tag = "4")]
    right_time: Option<PhysicalExprNode>,
    #[prost(string, tag = "5")]
    op: String,
    #[prost(string, tag = "6")]
    domain: String,
    #[prost(int64, optional, tag = "7")]
    ttl: Option<i64>,
    #[prost(message, optional, tag = "8")]
    tie_breaker: Option<PhysicalExprNode>,
    #[prost(string, tag = "9")]
    mode: String,
    /// Set for the `latest_visible_by` mode only.
    #[prost(message, optional, tag = "10")]
    rank_time: Option<PhysicalExprNode>,
    #[prost(message, optional, tag = "11")]
    narrowing: Option<NarrowingProto>,
    #[prost(bool, tag = "12")]
    inner: bool,
}

/// [`WindowAggregateOptions`] field by field.
#[derive(Clone, PartialEq, Message)]
struct WindowAggregateProto {
    #[prost(message, repeated, tag = "1")]
    left_keys: Vec<PhysicalExprNode>,
    #[prost(message, repeated, tag = "2")]
    right_keys: Vec<PhysicalExprNode>,
    #[prost(message, optional, tag = "3")]
    left_time: Option<PhysicalExprNode>,
    #[prost(message, optional, tag = "4")]
    right_time: Option<PhysicalExprNode>,
    #[prost(string, tag = "5")]
    domain: String,
    #[prost(message, repeated, tag = "6")]
    tie_order: Vec<PhysicalExprNode>,
    #[prost(message, repeated, tag = "7")]
    aggregates: Vec<AggregateProto>,
    #[prost(message, optional, tag = "8")]
    narrowing: Option<NarrowingProto>,
    #[prost(message, optional, tag = "9")]
    created: Option<PhysicalExprNode>,
}

/// One [`WindowAggregate`]; the function as its SQL spelling (see `names::aggregate`).
#[derive(Clone, PartialEq, Message)]
struct AggregateProto {
    #[prost(string, tag = "1")]
    function: String,
    /// Absent for `count(*)`.
    #[prost(message, optional, tag = "2")]
    argument: Option<PhysicalExprNode>,
    #[prost(int64, tag = "3")]
    window: i64,
    #[prost(string, tag = "4")]
    name: String,
}

/// A [`Narrowing`] apart from what the join's options already say.
#[derive(Clone, PartialEq, Message)]
struct NarrowingProto {
    #[prost(uint64, tag = "1")]
    bounds_id: u64,
    /// Whether the spine's key sets narrow the scan too (the bounds' keys are the join's).
    #[prost(bool, tag = "2")]
    key_sets: bool,
    #[prost(message, optional, tag = "3")]
    time_filter: Option<PhysicalExprNode>,
    #[prost(message, optional, tag = "4")]
    partition_filter: Option<PartitionFilterProto>,
    #[prost(message, optional, tag = "5")]
    key_filter: Option<PhysicalExprNode>,
}

#[derive(Clone, PartialEq, Message)]
struct PartitionFilterProto {
    #[prost(message, optional, tag = "1")]
    filter: Option<PhysicalExprNode>,
    /// `date` (one column) or `calendar` (year, month, ...).
    #[prost(string, tag = "2")]
    kind: String,
    /// The partition columns, in the scan's table schema.
    #[prost(message, repeated, tag = "3")]
    columns: Vec<PhysicalExprNode>,
    #[prost(string, repeated, tag = "4")]
    names: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
struct KeyTimeSortProto {
    #[prost(message, repeated, tag = "1")]
    exprs: Vec<PhysicalSortExprNode>,
    #[prost(bool, tag = "2")]
    preserve_partitioning: bool,
}

#[derive(Clone, PartialEq, Message)]
struct SpineBoundsProto {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(message, optional, tag = "2")]
    time: Option<PhysicalExprNode>,
    #[prost(message, repeated, tag = "3")]
    keys: Vec<PhysicalExprNode>,
    #[prost(string, tag = "4")]
    domain: String,
}

impl PhysicalExtensionCodec for HindcastCodec {
    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        let encoder = Encoder {
            codec: self,
            converter,
        };
        let node = if let Some(join) = node.downcast_ref::<AsOfJoinExec>() {
            NodeProto::AsOfJoin(Box::new(encoder.join(join)?))
        } else if let Some(sort) = node.downcast_ref::<KeyTimeSortExec>() {
            NodeProto::KeyTimeSort(KeyTimeSortProto {
                exprs: serialize_physical_sort_exprs(sort.sort().expr().clone(), self, converter)?,
                preserve_partitioning: sort.sort().preserve_partitioning(),
            })
        } else if let Some(exec) = node.downcast_ref::<SpineBoundsExec>() {
            let bounds = exec.bounds();
            NodeProto::SpineBounds(Box::new(SpineBoundsProto {
                id: bounds.id(),
                time: Some(encoder.expr(bounds.time())?),
                keys: encoder.exprs(bounds.keys())?,
                domain: names::domain(bounds.domain()),
            }))
        } else if let Some(join) = node.downcast_ref::<WindowAggregateExec>() {
            NodeProto::WindowAggregate(Box::new(encoder.window_aggregate(join)?))
        } else {
            return not_impl_err!("hindcast's codec does not encode {}", node.name());
        };
        PlanProto { node: Some(node) }
            .encode(buf)
            .map_err(|e| internal_datafusion_err!("encoding a hindcast node: {e}"))
    }

    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let proto = PlanProto::decode(buf)
            .map_err(|e| internal_datafusion_err!("a hindcast node that does not decode: {e}"))?;
        let decoder = Decoder {
            ctx: PhysicalPlanDecodeContext::new(ctx, self),
            converter,
        };
        match (proto.node, inputs) {
            (Some(NodeProto::AsOfJoin(join)), [left, right]) => decoder.join(*join, left, right),
            (Some(NodeProto::WindowAggregate(join)), [left, right]) => {
                decoder.window_aggregate(*join, left, right)
            }
            (Some(NodeProto::KeyTimeSort(sort)), [input]) => {
                let exprs = parse_physical_sort_exprs(
                    &sort.exprs,
                    &decoder.ctx,
                    &input.schema(),
                    converter,
                )?;
                let ordering = LexOrdering::new(exprs)
                    .ok_or_else(|| internal_datafusion_err!("a KeyTimeSortExec without keys"))?;
                let sort = SortExec::new(ordering, Arc::clone(input))
                    .with_preserve_partitioning(sort.preserve_partitioning);
                // A sort the key-time sort cannot replace here stays DataFusion's.
                match KeyTimeSortExec::try_replace(&sort) {
                    Some(sort) => Ok(Arc::new(sort)),
                    None => Ok(Arc::new(sort)),
                }
            }
            (Some(NodeProto::SpineBounds(proto)), [input]) => {
                let schema = input.schema();
                let bounds = SpineBounds::with_id(
                    proto.id,
                    decoder.expr(required(&proto.time, "spine time")?, &schema)?,
                    decoder.exprs(&proto.keys, &schema)?,
                    names::parse_domain(&proto.domain)?,
                );
                Ok(Arc::new(SpineBoundsExec::new(Arc::clone(input), bounds)))
            }
            (node, inputs) => internal_err!(
                "a hindcast node that does not decode: {} with {} inputs",
                match node {
                    Some(NodeProto::AsOfJoin(_)) => "AsOfJoinExec",
                    Some(NodeProto::KeyTimeSort(_)) => "KeyTimeSortExec",
                    Some(NodeProto::SpineBounds(_)) => "SpineBoundsExec",
                    Some(NodeProto::WindowAggregate(_)) => "WindowAggregateExec",
                    None => "an empty node",
                },
                inputs.len()
            ),
        }
    }
}

struct Encoder<'a> {
    codec: &'a HindcastCodec,
    converter: &'a dyn PhysicalProtoConverterExtension,
}

impl Encoder<'_> {
    fn expr(&self, expr: &PhysicalExprRef) -> Result<PhysicalExprNode> {
        self.converter.physical_expr_to_proto(expr, self.codec)
    }

    fn exprs(&self, exprs: &[PhysicalExprRef]) -> Result<Vec<PhysicalExprNode>> {
        exprs.iter().map(|e| self.expr(e)).collect()
    }

    fn join(&self, join: &AsOfJoinExec) -> Result<AsOfJoinProto> {
        let options = join.options().try_map(|_, e| self.expr(e))?;
        let (left_keys, right_keys) = options.on.into_iter().unzip();
        let mode = names::mode(&options.mode);
        let rank_time = match options.mode {
            JoinMode::LatestVisibleBy { rank_time } => Some(rank_time),
            _ => None,
        };
        Ok(AsOfJoinProto {
            left_keys,
            right_keys,
            left_time: Some(options.left_time),
            right_time: Some(options.right_time),
            op: names::op(options.op),
            domain: names::domain(options.domain),
            ttl: options.ttl,
            tie_breaker: options.tie_breaker,
            mode,
            rank_time,
            narrowing: join.narrowing().map(|n| self.narrowing(n)).transpose()?,
            inner: options.inner,
        })
    }

    fn window_aggregate(&self, join: &WindowAggregateExec) -> Result<WindowAggregateProto> {
        let options = join.options().try_map(|_, e| self.expr(e))?;
        let (left_keys, right_keys) = options.on.into_iter().unzip();
        let aggregates = options
            .aggregates
            .into_iter()
            .map(|a| AggregateProto {
                function: names::aggregate(a.function),
                argument: a.argument,
                window: a.window,
                name: a.name,
            })
            .collect();
        Ok(WindowAggregateProto {
            left_keys,
            right_keys,
            left_time: Some(options.left_time),
            right_time: Some(options.right_time),
            domain: names::domain(options.domain),
            tie_order: options.tie_order,
            aggregates,
            narrowing: join.narrowing().map(|n| self.narrowing(n)).transpose()?,
            created: options.created,
        })
    }

    fn narrowing(&self, narrowing: &Narrowing) -> Result<NarrowingProto> {
        let time_filter = Arc::clone(&narrowing.time_filter) as PhysicalExprRef;
        let key_filter = Arc::clone(&narrowing.key_filter) as PhysicalExprRef;
        let partition_filter = match &narrowing.partition_filter {
            None => None,
            Some(partitions) => {
                let (kind, names) = match &partitions.partitioning {
                    TimePartitioning::Date(name) => ("date", vec![name.clone()]),
                    TimePartitioning::Calendar(names) => ("calendar", names.clone()),
                };
                Some(PartitionFilterProto {
                    filter: Some(self.expr(&(Arc::clone(&partitions.filter) as PhysicalExprRef))?),
                    kind: kind.into(),
                    columns: self.exprs(&partitions.columns)?,
                    names,
                })
            }
        };
        Ok(NarrowingProto {
            bounds_id: narrowing.bounds.id(),
            key_sets: !narrowing.right_keys.is_empty(),
            time_filter: Some(self.expr(&time_filter)?),
            partition_filter,
            key_filter: Some(self.expr(&key_filter)?),
        })
    }
}

struct Decoder<'a> {
    ctx: PhysicalPlanDecodeContext<'a>,
    converter: &'a dyn PhysicalProtoConverterExtension,
}

impl Decoder<'_> {
    fn expr(&self, node: &PhysicalExprNode, schema: &Schema) -> Result<PhysicalExprRef> {
        self.converter
            .proto_to_physical_expr(node, schema, &self.ctx)
    }

    fn exprs(&self, nodes: &[PhysicalExprNode], schema: &Schema) -> Result<Vec<PhysicalExprRef>> {
        nodes.iter().map(|n| self.expr(n, schema)).collect()
    }

    fn join(
        &self,
        proto: AsOfJoinProto,
        left: &Arc<dyn ExecutionPlan>,
        right: &Arc<dyn ExecutionPlan>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if proto.left_keys.len() != proto.right_keys.len() {
            return internal_err!("an ASOF join whose key lists differ in length");
        }
        let mode = names::parse_mode(&proto.mode, proto.rank_time)?;
        let options = AsOfJoinOptions {
            on: proto.left_keys.into_iter().zip(proto.right_keys).collect(),
            left_time: required(&proto.left_time, "left time")?.clone(),
            right_time: required(&proto.right_time, "right time")?.clone(),
            op: names::parse_op(&proto.op)?,
            domain: names::parse_domain(&proto.domain)?,
            ttl: proto.ttl,
            tie_breaker: proto.tie_breaker,
            mode,
            inner: proto.inner,
        };
        let options = options.try_map(self.side_exprs(left, right))?;
        let sides = JoinSides {
            left_time: &options.left_time,
            left_keys: options.left_keys().cloned().collect(),
            right_keys: options.right_keys().cloned().collect(),
            right_time: &options.right_time,
            domain: options.domain,
            op: options.op,
            ttl: options.ttl,
        };
        let narrowing = self.narrowing(proto.narrowing, sides, left, right)?;
        let join = AsOfJoinExec::try_new(Arc::clone(left), Arc::clone(right), options)?;
        Ok(Arc::new(join.with_narrowing(narrowing)))
    }

    fn window_aggregate(
        &self,
        proto: WindowAggregateProto,
        left: &Arc<dyn ExecutionPlan>,
        right: &Arc<dyn ExecutionPlan>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if proto.left_keys.len() != proto.right_keys.len() {
            return internal_err!("a window aggregate join whose key lists differ in length");
        }
        let aggregates = proto
            .aggregates
            .into_iter()
            .map(|a| {
                Ok(WindowAggregate {
                    function: names::parse_aggregate(&a.function)?,
                    argument: a.argument,
                    window: a.window,
                    name: a.name,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let options = WindowAggregateOptions {
            on: proto.left_keys.into_iter().zip(proto.right_keys).collect(),
            left_time: required(&proto.left_time, "left time")?.clone(),
            right_time: required(&proto.right_time, "right time")?.clone(),
            domain: names::parse_domain(&proto.domain)?,
            tie_order: proto.tie_order,
            created: proto.created,
            aggregates,
        };
        let options = options.try_map(self.side_exprs(left, right))?;
        let (op, ttl) = options.reach();
        let sides = JoinSides {
            left_time: &options.left_time,
            left_keys: options.left_keys().cloned().collect(),
            right_keys: options.right_keys().cloned().collect(),
            right_time: &options.right_time,
            domain: options.domain,
            op,
            ttl,
        };
        let narrowing = self.narrowing(proto.narrowing, sides, left, right)?;
        let join = WindowAggregateExec::try_new(Arc::clone(left), Arc::clone(right), options)?;
        Ok(Arc::new(join.with_narrowing(narrowing)))
    }

    /// Decodes a join's expression against the input of the side it reads, for the
    /// options' `try_map`.
    fn side_exprs<'b>(
        &'b self,
        left: &Arc<dyn ExecutionPlan>,
        right: &Arc<dyn ExecutionPlan>,
    ) -> impl FnMut(JoinSide, &PhysicalExprNode) -> Result<PhysicalExprRef> + 'b {
        let (left, right) = (left.schema(), right.schema());
        move |side, node| match side {
            JoinSide::Left => self.expr(node, &left),
            _ => self.expr(node, &right),
        }
    }

    /// The narrowing a join was encoded with, if any and if its bounds are found.
    fn narrowing(
        &self,
        proto: Option<NarrowingProto>,
        sides: JoinSides,
        left: &Arc<dyn ExecutionPlan>,
        right: &Arc<dyn ExecutionPlan>,
    ) -> Result<Option<Arc<Narrowing>>> {
        let Some(proto) = proto else {
            return Ok(None);
        };
        // The bounds must be of this join's spine time (and keys, for key sets): narrowing
        // from another spine's would drop rows.
        let Some(bounds) = find_bounds(left, proto.bounds_id).filter(|bounds| {
            bounds.tracks(sides.left_time, sides.domain)
                && (!proto.key_sets || bounds.tracks_keys(&sides.left_keys))
        }) else {
            return Ok(None);
        };
        let right_keys = if proto.key_sets {
            sides.right_keys
        } else {
            vec![]
        };
        let schema = right.schema();
        let time_filter = self.expr(required(&proto.time_filter, "time filter")?, &schema)?;
        let key_filter = self.expr(required(&proto.key_filter, "key filter")?, &schema)?;
        let partition_filter = match proto.partition_filter {
            None => None,
            Some(partitions) => {
                let partitioning = match partitions.kind.as_str() {
                    "date" if partitions.names.len() == 1 => {
                        TimePartitioning::Date(partitions.names[0].clone())
                    }
                    "calendar" => TimePartitioning::Calendar(partitions.names),
                    kind => {
                        return internal_err!(
                            "a partition filter of kind {kind:?} on {} columns does not decode",
                            partitions.names.len()
                        );
                    }
                };
                // The columns are the scan's table schema's, which decoding does not check.
                let filter =
                    self.expr(required(&partitions.filter, "partition filter")?, &schema)?;
                Some(Arc::new(PartitionFilter {
                    filter: dynamic_filter(filter)?,
                    partitioning,
                    columns: self.exprs(&partitions.columns, &schema)?,
                }))
            }
        };
        let narrowing = Narrowing::new(
            bounds,
            sides.op,
            sides.ttl,
            Arc::clone(sides.right_time),
            right_keys,
            schema,
        )?
        .with_filters(dynamic_filter(time_filter)?, dynamic_filter(key_filter)?)
        .with_partition_filter(partition_filter);
        Ok(Some(Arc::new(narrowing)))
    }
}

/// What decoding a join's narrowing needs of the join, whichever node it is.
struct JoinSides<'a> {
    left_time: &'a PhysicalExprRef,
    left_keys: Vec<PhysicalExprRef>,
    right_keys: Vec<PhysicalExprRef>,
    right_time: &'a PhysicalExprRef,
    domain: TimeDomain,
    op: MatchOp,
    ttl: Option<i64>,
}

/// The spine bounds with this id in `plan`: a [`SpineBoundsExec`]'s, or those a join below
/// shares (several views joined to one spine).
fn find_bounds(plan: &Arc<dyn ExecutionPlan>, id: u64) -> Option<Arc<SpineBounds>> {
    if let Some(exec) = plan.downcast_ref::<SpineBoundsExec>()
        && exec.bounds().id() == id
    {
        return Some(Arc::clone(exec.bounds()));
    }
    if let Some((_, Some(narrowing))) = crate::physical::join_spine(plan)
        && narrowing.bounds.id() == id
    {
        return Some(Arc::clone(&narrowing.bounds));
    }
    plan.children()
        .into_iter()
        .find_map(|child| find_bounds(child, id))
}

fn dynamic_filter(expr: PhysicalExprRef) -> Result<Arc<DynamicFilterPhysicalExpr>> {
    let any: Arc<dyn Any + Send + Sync> = expr;
    any.downcast::<DynamicFilterPhysicalExpr>()
        .map_err(|_| internal_datafusion_err!("a narrowing filter that is not a dynamic filter"))
}

fn required<'a>(node: &'a Option<PhysicalExprNode>, what: &str) -> Result<&'a PhysicalExprNode> {
    node.as_ref()
        .ok_or_else(|| internal_datafusion_err!("a hindcast node without its {what}"))
}

/// The names the small enums are encoded by: each one's spelling in one place.
mod names {
    use super::*;

    pub fn domain(domain: TimeDomain) -> String {
        match domain {
            TimeDomain::Integer => "integer",
            TimeDomain::Instant(TimeUnit::Second) => "s",
            TimeDomain::Instant(TimeUnit::Millisecond) => "ms",
            TimeDomain::Instant(TimeUnit::Microsecond) => "us",
            TimeDomain::Instant(TimeUnit::Nanosecond) => "ns",
        }
        .into()
    }

    pub fn parse_domain(name: &str) -> Result<TimeDomain> {
        Ok(match name {
            "integer" => TimeDomain::Integer,
            "s" => TimeDomain::Instant(TimeUnit::Second),
            "ms" => TimeDomain::Instant(TimeUnit::Millisecond),
            "us" => TimeDomain::Instant(TimeUnit::Microsecond),
            "ns" => TimeDomain::Instant(TimeUnit::Nanosecond),
            other => return internal_err!("unknown time domain {other:?}"),
        })
    }

    pub fn op(op: MatchOp) -> String {
        match op {
            MatchOp::GtEq => "gt_eq",
            MatchOp::Gt => "gt",
            MatchOp::LtEq => "lt_eq",
            MatchOp::Lt => "lt",
            MatchOp::Nearest => "nearest",
            MatchOp::NearestExclusive => "nearest_exclusive",
        }
        .into()
    }

    pub fn parse_op(name: &str) -> Result<MatchOp> {
        Ok(match name {
            "gt_eq" => MatchOp::GtEq,
            "gt" => MatchOp::Gt,
            "lt_eq" => MatchOp::LtEq,
            "lt" => MatchOp::Lt,
            "nearest" => MatchOp::Nearest,
            "nearest_exclusive" => MatchOp::NearestExclusive,
            other => return internal_err!("unknown match operator {other:?}"),
        })
    }

    /// An aggregate as its SQL spelling, `count(*)` and `count(DISTINCT)` told apart.
    pub fn aggregate(function: AggregateFunction) -> String {
        match function {
            AggregateFunction::CountRows => "count(*)".into(),
            AggregateFunction::CountDistinct => "count(DISTINCT)".into(),
            other => other.sql_name().into(),
        }
    }

    pub fn parse_aggregate(name: &str) -> Result<AggregateFunction> {
        let parsed = match name {
            "count(*)" => AggregateFunction::parse("count", false, true),
            "count(DISTINCT)" => AggregateFunction::parse("count", true, false),
            other => AggregateFunction::parse(other, false, false),
        };
        parsed.map_err(|e| internal_datafusion_err!("an aggregate that does not decode: {e}"))
    }

    pub fn mode<E>(mode: &JoinMode<E>) -> String {
        match mode {
            JoinMode::Winner => "winner",
            JoinMode::DistinctSpine => "distinct_spine",
            JoinMode::KeepTies => "keep_ties",
            JoinMode::LatestVisibleBy { .. } => "latest_visible_by",
        }
        .into()
    }

    /// `rank_time` is the `latest_visible_by` mode's, and given with it only.
    pub fn parse_mode<E>(name: &str, rank_time: Option<E>) -> Result<JoinMode<E>> {
        Ok(match (name, rank_time) {
            // "nearest": its name before the nearest direction existed.
            ("winner" | "nearest", None) => JoinMode::Winner,
            ("distinct_spine", None) => JoinMode::DistinctSpine,
            ("keep_ties", None) => JoinMode::KeepTies,
            ("latest_visible_by", Some(rank_time)) => JoinMode::LatestVisibleBy { rank_time },
            (other, _) => return internal_err!("unknown ASOF join mode {other:?}"),
        })
    }
}
