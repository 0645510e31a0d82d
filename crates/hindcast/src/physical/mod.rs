//! Physical operators and the extension planner that creates them.

pub mod asof_join;
mod planner;

pub use asof_join::AsOfJoinExec;
pub use planner::HindcastExtensionPlanner;
