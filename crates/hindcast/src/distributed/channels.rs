//! How the coordinator reaches its workers: one HTTP/2 connection per worker, with a
//! connect timeout and keep-alive pings, and every error naming the worker.
//!
//! datafusion-distributed's default resolver connects without either, so a worker that
//! stops answering (a frozen process, a network partition that drops packets) would leave
//! a query waiting forever, and a failure mid-query reads "h2 protocol error" without
//! saying where. datafusion-distributed has no task retries: a query fails when one of
//! its workers does (`docs/distributed.md`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::common::{DataFusionError, Result, exec_datafusion_err};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion_distributed::grpc::{BoxCloneSyncChannel, create_worker_client};
use datafusion_distributed::{
    ChannelResolver, CoordinatorToWorkerMsg, ExecuteTaskRequest, GetWorkerInfoRequest,
    GetWorkerInfoResponse, SetPlanRequest, WorkerChannel, WorkerToCoordinatorMsg,
};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use http::HeaderMap;
use tonic::transport::Channel;
use url::Url;

/// How long connecting to a worker may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection is pinged this often, and closed (failing its queries) when a ping is not
/// answered within [`KEEP_ALIVE_TIMEOUT`]: the bound on how long a query waits for a worker
/// that stopped answering.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(5);
pub const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// One connection per worker URL, made on first use.
#[derive(Default)]
pub struct WorkerChannels {
    channels: Mutex<HashMap<Url, Channel>>,
}

#[async_trait]
impl ChannelResolver for WorkerChannels {
    async fn get_worker_client_for_url(&self, url: &Url) -> Result<Box<dyn WorkerChannel>> {
        let cached = self
            .channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(url)
            .cloned();
        let channel = match cached {
            Some(channel) => channel,
            None => {
                let channel = Channel::from_shared(url.to_string())
                    .map_err(|e| {
                        exec_datafusion_err!("the worker address {url} is not a URL: {e}")
                    })?
                    .connect_timeout(CONNECT_TIMEOUT)
                    .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
                    .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
                    .keep_alive_while_idle(true)
                    .connect()
                    .await
                    .map_err(|e| {
                        exec_datafusion_err!("cannot connect to worker {url}: {}", source_chain(&e))
                    })?;
                self.channels
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(url.clone(), channel.clone());
                channel
            }
        };
        Ok(Box::new(NamedChannel {
            url: Arc::new(url.clone()),
            inner: create_worker_client(BoxCloneSyncChannel::new(channel)),
        }))
    }
}

/// An error and its causes on one line: tonic's own display says only "transport error".
fn source_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A worker's channel whose errors, and its streams' errors, say which worker.
struct NamedChannel {
    url: Arc<Url>,
    inner: Box<dyn WorkerChannel>,
}

fn named(url: &Url, error: DataFusionError) -> DataFusionError {
    error.context(format!("worker {url}"))
}

#[async_trait]
impl WorkerChannel for NamedChannel {
    async fn coordinator_channel(
        &mut self,
        headers: HeaderMap,
        set_plan_request: SetPlanRequest,
        c2w_stream: BoxStream<'static, CoordinatorToWorkerMsg>,
        metrics: ExecutionPlanMetricsSet,
        task_ctx: &Arc<TaskContext>,
    ) -> Result<BoxStream<'static, Result<WorkerToCoordinatorMsg>>> {
        let url = Arc::clone(&self.url);
        let stream = self
            .inner
            .coordinator_channel(headers, set_plan_request, c2w_stream, metrics, task_ctx)
            .await
            .map_err(|e| named(&url, e))?;
        Ok(stream.map_err(move |e| named(&url, e)).boxed())
    }

    async fn execute_task(
        &mut self,
        headers: HeaderMap,
        request: ExecuteTaskRequest,
        metrics: ExecutionPlanMetricsSet,
        task_ctx: &Arc<TaskContext>,
    ) -> Result<Vec<BoxStream<'static, Result<RecordBatch>>>> {
        let streams = self
            .inner
            .execute_task(headers, request, metrics, task_ctx)
            .await
            .map_err(|e| named(&self.url, e))?;
        Ok(streams
            .into_iter()
            .map(|stream| {
                let url = Arc::clone(&self.url);
                stream.map_err(move |e| named(&url, e)).boxed()
            })
            .collect())
    }

    async fn get_worker_info(
        &mut self,
        request: GetWorkerInfoRequest,
    ) -> Result<GetWorkerInfoResponse> {
        self.inner
            .get_worker_info(request)
            .await
            .map_err(|e| named(&self.url, e))
    }
}
