//! The logical plan: the [`AsOfJoin`] node, its options, the [`WindowAggregateJoin`] node, the one reader of point-in-time
//! conditions, and the optimizer rules.

mod asof_join;
mod options;
mod prune_aggregates;
mod push_down_filter;
mod row_number;
mod time_condition;
mod window_aggregate;

pub use asof_join::{AsOfJoin, scanned_partitioning, view_column};
pub use options::{AsOfJoinOptions, JoinMode, MatchOp, fmt_attributes};
pub use prune_aggregates::PruneWindowAggregates;
pub use push_down_filter::PushDownAsOfFilter;
pub use row_number::RewriteRowNumberAsOf;
pub use time_condition::{Bound, Term, TimeCondition, only_refs};
pub use window_aggregate::{WindowAggregate, WindowAggregateJoin, WindowAggregateOptions};
