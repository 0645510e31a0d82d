//! [`Narrowing`]: what one ASOF join does to its right side once its spine's bounds are
//! known: a time range (and for few entities a key set) pushed into the feature scan as
//! a dynamic filter, and on a time-partitioned feature view a filter on the partitions.

use std::sync::{Arc, Mutex};

use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::PhysicalExprRef;
use datafusion::physical_expr::expressions::{
    BinaryExpr, CastExpr, DynamicFilterPhysicalExpr, in_list, lit,
};
use datafusion::physical_expr::utils::collect_columns;

use super::SpineBounds;
use crate::features::TimePartitioning;
use crate::logical::MatchOp;
use crate::time::Round;

/// `key(partition) BETWEEN key(lo) AND key(hi)`, where `key` is monotone in time: the
/// date, or `((year * 100 + month) * 100 + day) * 100 + hour`.
fn partition_predicate(
    partitioning: &TimePartitioning,
    columns: &[PhysicalExprRef],
    lo: Option<NaiveDateTime>,
    hi: Option<NaiveDateTime>,
) -> PhysicalExprRef {
    let (key, bound): (PhysicalExprRef, Box<dyn Fn(NaiveDateTime) -> ScalarValue>) =
        match partitioning {
            TimePartitioning::Date(_) => (
                Arc::new(CastExpr::new(
                    Arc::clone(&columns[0]),
                    DataType::Date32,
                    None,
                )),
                Box::new(|t: NaiveDateTime| {
                    ScalarValue::Date32(Some((t.date() - NaiveDate::default()).num_days() as i32))
                }),
            ),
            TimePartitioning::Calendar(_) => {
                let mut key: Option<PhysicalExprRef> = None;
                for column in columns {
                    let part: PhysicalExprRef =
                        Arc::new(CastExpr::new(Arc::clone(column), DataType::Int64, None));
                    key = Some(match key {
                        None => part,
                        Some(k) => binary(
                            binary(k, Operator::Multiply, lit(100i64)),
                            Operator::Plus,
                            part,
                        ),
                    });
                }
                let n = columns.len();
                let key = key.unwrap_or_else(|| lit(true));
                (
                    key,
                    Box::new(move |t: NaiveDateTime| {
                        let parts = [
                            t.year() as i64,
                            t.month() as i64,
                            t.day() as i64,
                            t.hour() as i64,
                        ];
                        ScalarValue::Int64(Some(parts[..n].iter().fold(0, |k, p| k * 100 + p)))
                    }),
                )
            }
        };
    let lower = lo.map(|t| binary(Arc::clone(&key), Operator::GtEq, lit(bound(t))));
    let upper = hi.map(|t| binary(Arc::clone(&key), Operator::LtEq, lit(bound(t))));
    conjunction(lower.into_iter().chain(upper))
}

fn binary(l: PhysicalExprRef, op: Operator, r: PhysicalExprRef) -> PhysicalExprRef {
    Arc::new(BinaryExpr::new(l, op, r))
}

fn conjunction(exprs: impl Iterator<Item = PhysicalExprRef>) -> PhysicalExprRef {
    exprs
        .reduce(|a, b| binary(a, Operator::And, b))
        .unwrap_or_else(|| lit(true))
}

/// A dynamic filter placed directly on a time-partitioned view's Parquet scan, over the
/// partition columns of the scan's table schema. (DataFusion's filter pushdown can only
/// carry expressions over the columns the scan outputs, and a join rarely selects the
/// partition column, so this one is attached when the join is planned.)
#[derive(Debug)]
pub struct PartitionFilter {
    pub filter: Arc<DynamicFilterPhysicalExpr>,
    pub partitioning: TimePartitioning,
    pub columns: Vec<PhysicalExprRef>,
}

impl PartitionFilter {
    pub fn new(partitioning: TimePartitioning, columns: Vec<PhysicalExprRef>) -> Self {
        Self {
            filter: Arc::new(DynamicFilterPhysicalExpr::new(columns.clone(), lit(true))),
            partitioning,
            columns,
        }
    }
}

/// Everything one join needs to narrow its right side once its spine's range is known.
#[derive(Debug)]
pub struct Narrowing {
    pub bounds: Arc<SpineBounds>,
    pub op: MatchOp,
    pub ttl: Option<i64>,
    /// The right time expression and its type, as the right input sees it.
    pub right_time: PhysicalExprRef,
    pub right_type: DataType,
    /// The right key expressions, when the spine's key sets are this join's (a later join
    /// in a chain on other keys uses the time range only), and the right input's schema.
    pub right_keys: Vec<PhysicalExprRef>,
    pub right_schema: SchemaRef,
    /// `right_time BETWEEN lo AND hi`, pushed into the right side by DataFusion's
    /// post-optimization filter pushdown (files and row groups pruned by statistics).
    pub time_filter: Arc<DynamicFilterPhysicalExpr>,
    /// `key IN (...)` for a spine of few entities, pushed the same way. A filter of its own,
    /// not a conjunct of the time filter's: DataFusion prunes Parquet pages only with
    /// filters over one column, and a file clustered by entity skips most of its pages by
    /// this one.
    pub key_filter: Arc<DynamicFilterPhysicalExpr>,
    pub partition_filter: Option<Arc<PartitionFilter>>,
    /// Held while the filters are set, so no partition reads right rows before they are.
    published: Mutex<bool>,
}

impl Narrowing {
    pub fn new(
        bounds: Arc<SpineBounds>,
        op: MatchOp,
        ttl: Option<i64>,
        right_time: PhysicalExprRef,
        right_keys: Vec<PhysicalExprRef>,
        right_schema: SchemaRef,
    ) -> Result<Self> {
        let right_type = right_time.data_type(&right_schema)?;
        // `true` until the spine's bounds are known.
        let filter = |exprs: &[PhysicalExprRef]| {
            let mut columns: Vec<_> = exprs.iter().flat_map(collect_columns).collect();
            columns.sort_by_key(|c| c.index());
            columns.dedup();
            let columns = columns
                .into_iter()
                .map(|c| Arc::new(c) as PhysicalExprRef)
                .collect();
            Arc::new(DynamicFilterPhysicalExpr::new(columns, lit(true)))
        };
        let time_filter = filter(std::slice::from_ref(&right_time));
        let key_filter = filter(&right_keys);
        Ok(Self {
            bounds,
            op,
            ttl,
            right_time,
            right_type,
            right_keys,
            right_schema,
            time_filter,
            key_filter,
            partition_filter: None,
            published: Mutex::new(false),
        })
    }

    pub fn with_partition_filter(mut self, filter: Option<Arc<PartitionFilter>>) -> Self {
        self.partition_filter = filter;
        self
    }

    /// The same narrowing setting these filters (a decoded plan's, shared with its scan).
    pub fn with_filters(
        mut self,
        time: Arc<DynamicFilterPhysicalExpr>,
        keys: Arc<DynamicFilterPhysicalExpr>,
    ) -> Self {
        self.time_filter = time;
        self.key_filter = keys;
        self
    }

    /// The filters the join pushes into its right side's scan (the key filter where the
    /// spine's key sets are this join's).
    pub fn scan_filters(&self) -> Vec<PhysicalExprRef> {
        let mut filters = vec![Arc::clone(&self.time_filter) as PhysicalExprRef];
        if !self.right_keys.is_empty() {
            filters.push(Arc::clone(&self.key_filter) as PhysicalExprRef);
        }
        filters
    }

    /// Set the filters once the spine's range is final, and say whether they are set.
    /// Called by every partition of the join before it reads right rows (until this returns
    /// `true`); the first call with a final range sets them, and the others wait until it
    /// has (a flag set before the filters would let another partition open files
    /// unfiltered in between).
    pub fn publish_if_ready(&self) -> Result<bool> {
        let mut published = self.published.lock().unwrap_or_else(|e| e.into_inner());
        if *published {
            return Ok(true);
        }
        let Some(summary) = self.bounds.get() else {
            return Ok(false);
        };
        *published = true;
        let domain = self.bounds.domain;
        let (lo, hi) = match summary.range {
            // No spine row has a time: no right row can match.
            None => {
                for filter in self.filters() {
                    filter.update(lit(false))?;
                    filter.mark_complete();
                }
                return Ok(true);
            }
            // A join that looks back reaches a TTL before the earliest spine time (without
            // one, all the way back); one that looks forward a TTL after the latest.
            Some((min, max)) => {
                let lo = if self.op.looks_back() {
                    self.ttl.map(|t| min.saturating_sub(t))
                } else {
                    Some(min)
                };
                let hi = if self.op.looks_forward() {
                    self.ttl.map(|t| max.saturating_add(t))
                } else {
                    Some(max)
                };
                (lo, hi)
            }
        };
        // Bounds that do not fit the right type are left open, which is always safe.
        let lower = lo
            .and_then(|v| domain.scalar(v, &self.right_type, Round::Up))
            .map(|v| binary(Arc::clone(&self.right_time), Operator::GtEq, lit(v)));
        let upper = hi
            .and_then(|v| domain.scalar(v, &self.right_type, Round::Down))
            .map(|v| binary(Arc::clone(&self.right_time), Operator::LtEq, lit(v)));
        // A spine with few entities: `key IN (...)`. A key with no value in the spine (all
        // NULL) matches nothing.
        let keys = self
            .right_keys
            .iter()
            .zip(&summary.keys)
            .filter_map(|(key, values)| {
                let values = values.as_ref()?;
                if values.is_empty() {
                    return Some(lit(false));
                }
                // Sorted, so plans and EXPLAIN output do not depend on hashing.
                let mut values: Vec<&ScalarValue> = values.iter().collect();
                values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
                let list = values.into_iter().map(|v| lit(v.clone())).collect();
                in_list(Arc::clone(key), list, &false, &self.right_schema).ok()
            })
            .collect::<Vec<_>>();
        self.time_filter
            .update(conjunction(lower.into_iter().chain(upper)))?;
        self.time_filter.mark_complete();
        self.key_filter.update(conjunction(keys.into_iter()))?;
        self.key_filter.mark_complete();
        if let Some(partitions) = &self.partition_filter {
            let lo = lo.and_then(|v| domain.utc(v));
            let hi = hi.and_then(|v| domain.utc(v));
            let predicate =
                partition_predicate(&partitions.partitioning, &partitions.columns, lo, hi);
            partitions.filter.update(predicate)?;
            partitions.filter.mark_complete();
        }
        Ok(true)
    }

    fn filters(&self) -> impl Iterator<Item = &Arc<DynamicFilterPhysicalExpr>> {
        [&self.time_filter, &self.key_filter]
            .into_iter()
            .chain(self.partition_filter.iter().map(|p| &p.filter))
    }
}
