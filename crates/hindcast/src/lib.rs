//! hindcast: a point-in-time join engine on Apache DataFusion.
//!
//! For every row of a spine (labelled events), it finds what a feature table said about the
//! same entity at that instant and not a moment later. Where things live:
//!
//! - [`sql`]: the SQL front end (`ASOF JOIN ... MATCH_CONDITION`, `FOR SYSTEM_TIME AS OF`,
//!   `historical_features`, the feature DDL) over DataFusion's parser;
//! - [`features`]: feature views, feature services and feature repositories;
//! - [`logical`]: the [`logical::AsOfJoin`] node and its optimizer rules;
//! - [`physical`]: the [`physical::AsOfJoinExec`] operator and its merge state machine;
//! - [`time`]: how time columns of different types are compared;
//! - [`Hindcast`]: the session that wires these into DataFusion.

pub mod features;
pub mod logical;
pub mod physical;
mod session;
pub mod sql;
pub mod storage;
pub mod time;

pub use session::{Hindcast, RetrievalOptions};
