//! Physical operators, the extension planner that creates them, and hindcast's physical
//! optimizer rules.
//!
//! - [`asof_join`]: the ASOF join operator;
//! - [`key_time_sort`]: the sort under it when memory is unlimited;
//! - [`spine_bounds`]: the spine's time range and keys, pushed into the feature scan;
//! - [`planner`]: logical node to operator; [`optimizer`]: `UseKeyTimeSort`.

pub mod asof_join;
pub mod key_time_sort;
mod optimizer;
mod planner;
pub mod spine_bounds;

pub use asof_join::{AsOfJoinExec, TickRange, widen};
pub use optimizer::UseKeyTimeSort;
pub use planner::HindcastExtensionPlanner;
