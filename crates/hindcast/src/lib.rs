//! hindcast: a point-in-time join engine on Apache DataFusion.
//!
//! For every row of a spine (labelled events), it finds what a feature table said about the
//! same entity at that instant and not a moment later. Modules import only downward, in
//! this order:
//!
//! - [`time`]: how time columns of different types are compared (and [`storage`]: object
//!   stores; [`delta`]: Delta Lake tables over them);
//! - [`features`]: feature views, feature services, time-partitioned views (the model);
//! - [`logical`]: the [`logical::AsOfJoin`] node, its [`logical::AsOfJoinOptions`], the
//!   reader of point-in-time conditions, and the optimizer rules;
//! - [`physical`]: the [`physical::AsOfJoinExec`] operator, the key-time sort, the spine
//!   bounds, and the planner and rules that create them;
//! - [`distributed`]: plans run on datafusion-distributed workers: the codec that carries
//!   them, the worker service, the coordinator's settings (and `runtime`: the defaults and
//!   memory limit a session and a worker share);
//! - [`sql`]: the SQL front end (`ASOF JOIN ... MATCH_CONDITION`, `FOR SYSTEM_TIME AS OF`,
//!   `historical_features`, the feature DDL's parser) over DataFusion's parser;
//! - [`Hindcast`] (`session`): the session that wires these into DataFusion, runs the
//!   feature DDL and loads repositories; [`manifest`]: a training set's manifest, and
//!   validating and reproducing it.

pub mod delta;
pub mod distributed;
pub mod features;
pub mod logical;
pub mod physical;
mod runtime;
mod session;
pub mod sql;
pub mod storage;
pub mod time;

#[doc(hidden)]
pub use session::crash_point;
pub use session::{
    Hindcast, HindcastBuilder, HindcastOptions, RetrievalOptions, WorkerList, error_message,
    manifest, parse_memory_limit,
};
