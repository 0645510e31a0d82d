//! Logical plan nodes and optimizer rules.

mod asof_join;
mod push_down_filter;

pub use asof_join::{AsOfJoin, MatchOp};
pub use push_down_filter::PushDownAsOfFilter;
