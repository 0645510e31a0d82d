//! Physical operators, the extension planner that creates them, and hindcast's physical
//! optimizer rules.
//!
//! - [`asof_join`]: the ASOF join operator;
//! - [`key_time_sort`]: the sort under it;
//! - [`window_aggregate`]: the window aggregation operator of aggregation views;
//! - [`spine_bounds`]: the spine's time range and keys, pushed into the feature scan;
//! - [`planner`]: logical node to operator; [`optimizer`]: `UseKeyTimeSort`.

pub mod asof_join;
pub mod key_time_sort;
mod optimizer;
mod planner;
pub mod spine_bounds;
pub mod window_aggregate;

pub use asof_join::{AsOfJoinExec, TickRange, widen};
pub use optimizer::UseKeyTimeSort;
pub use planner::HindcastExtensionPlanner;
pub use window_aggregate::WindowAggregateExec;

use std::sync::Arc;

use datafusion::physical_plan::ExecutionPlan;

/// A join's spine input and the narrowing of its feature side.
pub type JoinSpine<'a> = (
    &'a Arc<dyn ExecutionPlan>,
    Option<&'a Arc<spine_bounds::Narrowing>>,
);

/// A point-in-time join's spine input and the narrowing of its feature side, for either
/// operator; `None` for any other node.
pub fn join_spine(plan: &Arc<dyn ExecutionPlan>) -> Option<JoinSpine<'_>> {
    if let Some(join) = plan.downcast_ref::<AsOfJoinExec>() {
        return Some((join.left(), join.narrowing()));
    }
    let join = plan.downcast_ref::<WindowAggregateExec>()?;
    Some((join.left(), join.narrowing()))
}
