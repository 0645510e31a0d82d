//! Running hindcast's plans across processes, on datafusion-distributed.
//!
//! The session that plans a query (the coordinator) plans it as it would alone; then
//! datafusion-distributed cuts the physical plan into stages at its repartitions (both
//! sides of an ASOF join are hash-partitioned by key, so each worker joins its share of the
//! keys) and sends each stage's tasks to the workers, the plans encoded with DataFusion's
//! protobuf and [`HindcastCodec`] for hindcast's operators. `docs/distributed.md` has how
//! to run a cluster.
//!
//! - [`codec`]: hindcast's operators as bytes;
//! - [`worker`]: the worker service (`hindcast worker`);
//! - [`channels`]: how the coordinator connects to the workers (timeouts, errors that
//!   name the worker).

pub mod channels;
pub mod codec;
mod worker;

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::execution::SessionStateBuilder;
use datafusion_distributed::{DistributedExt, SessionStateBuilderExt, WorkerResolver};
use url::Url;

pub use codec::{HindcastCodec, decode_plan, encode_plan};
pub use worker::serve_worker;

/// `builder`'s queries, once planned, run on `workers`. Call after the builder has its
/// query planner (the distributed planner wraps it).
pub fn coordinate(builder: SessionStateBuilder, workers: Vec<Url>) -> SessionStateBuilder {
    builder
        .with_distributed_worker_resolver(Workers(workers))
        .with_distributed_channel_resolver(channels::WorkerChannels::default())
        .with_distributed_user_codec_arc(Arc::new(HindcastCodec))
        .with_distributed_planner()
}

/// A fixed list of workers.
struct Workers(Vec<Url>);

impl WorkerResolver for Workers {
    fn get_urls(&self) -> Result<Vec<Url>> {
        Ok(self.0.clone())
    }
}
