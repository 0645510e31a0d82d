//! A `hindcast worker`: datafusion-distributed's worker service, running the stages of
//! plans that a hindcast session planned.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::SessionState;
use datafusion_distributed::{
    ChannelResolver, DistributedExt, Worker, WorkerQueryContext, WorkerSessionBuilder,
};
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use super::HindcastCodec;
use super::channels::WorkerChannels;
use crate::runtime::{default_config, runtime_env};

/// Serve stages on `listener` until the process ends, within `memory_limit` bytes if given
/// (this process's limit, not the coordinator's: the plans' sorts are chosen for it, see
/// `codec`). Object stores are this process's: `s3://` credentials come from its
/// environment.
pub async fn serve_worker(listener: TcpListener, memory_limit: Option<usize>) -> Result<()> {
    let session = WorkerSession {
        memory_limit,
        channels: Arc::new(WorkerChannels::default()),
    };
    let worker = Worker::from_session_builder(session).with_runtime_env(runtime_env(memory_limit)?);
    Server::builder()
        .add_service(worker.into_worker_server())
        .serve_with_incoming(TcpIncoming::from(listener))
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))
}

/// Each task's session: hindcast's codec, the batch size and spill settings hindcast uses
/// under this worker's memory limit (the coordinator sends only its distributed settings),
/// and this worker's connections to the others (a shuffle reads from them), which time out
/// and name the worker as the coordinator's do.
struct WorkerSession {
    memory_limit: Option<usize>,
    channels: Arc<dyn ChannelResolver + Send + Sync>,
}

#[async_trait]
impl WorkerSessionBuilder for WorkerSession {
    async fn build_session_state(&self, ctx: WorkerQueryContext) -> Result<SessionState> {
        let mut builder = ctx.builder;
        if let Some(config) = builder.config().as_mut() {
            let defaults = default_config(self.memory_limit);
            let execution = &mut config.options_mut().execution;
            execution.batch_size = defaults.options().execution.batch_size;
            execution.sort_spill_reservation_bytes =
                defaults.options().execution.sort_spill_reservation_bytes;
        }
        Ok(builder
            .with_distributed_user_codec_arc(Arc::new(HindcastCodec))
            .with_distributed_channel_resolver(Arc::clone(&self.channels))
            .build())
    }
}
