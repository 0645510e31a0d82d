//! Logical plan nodes and optimizer rules.

mod asof_join;
mod push_down_filter;
mod row_number;

pub use asof_join::{AsOfJoin, MatchOp};
pub use push_down_filter::PushDownAsOfFilter;
pub use row_number::{HindcastOptions, RewriteRowNumberAsOf};
