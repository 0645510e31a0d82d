//! Object storage: `s3://` locations for feature views, tables and `COPY`.
//!
//! DataFusion resolves a URL to an [`ObjectStore`] through the runtime's registry, which
//! knows only local files by default. hindcast's registry also builds an S3 client the
//! first time a bucket is used, configured from the standard `AWS_*` environment variables
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
//! `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`, ...). A feature view may instead carry its own
//! credentials in `OPTIONS ('aws.access_key_id' '...', 'aws.secret_access_key' '...')`;
//! those are handed to the client and kept nowhere else, so they never show up in
//! `DESCRIBE`, `EXPLAIN` or error messages.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::{DataFusionError, Result, plan_err};
use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use object_store::aws::AmazonS3Builder;
use object_store::{ObjectStore, RetryConfig};
use url::Url;

/// The prefix of the S3 options a feature view's `OPTIONS` may hold.
pub const S3_OPTION_PREFIX: &str = "aws.";

/// Whether an option holds a credential, which nothing hindcast writes or shows may repeat.
pub fn is_credential(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "aws.access_key_id",
        "aws.secret_access_key",
        "aws.session_token",
    ]
    .iter()
    .any(|c| key.ends_with(c))
}

/// A runtime builder whose object store registry understands `s3://`.
pub fn runtime_env_builder() -> RuntimeEnvBuilder {
    RuntimeEnvBuilder::new().with_object_store_registry(Arc::new(HindcastObjectStores::default()))
}

/// Local files, plus S3 buckets created on first use from the environment.
#[derive(Debug, Default)]
pub struct HindcastObjectStores {
    stores: DefaultObjectStoreRegistry,
}

impl ObjectStoreRegistry for HindcastObjectStores {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        self.stores.register_store(url, store)
    }

    fn deregister_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        self.stores.deregister_store(url)
    }

    fn get_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        match self.stores.get_store(url) {
            Ok(store) => Ok(store),
            Err(_) if url.scheme() == "s3" => {
                let store = s3_store(url, &HashMap::new())?;
                self.stores.register_store(url, Arc::clone(&store));
                Ok(store)
            }
            Err(e) => Err(e),
        }
    }
}

/// Retries of a failed S3 request: each request that fails for a reason worth retrying (a
/// 5xx status, a timeout, a connection refused or reset) is tried again at most
/// `S3_RETRIES` times, after 100 ms, then about twice as long each time, and never past
/// 30 s from the first attempt; then the query fails naming the object. Why not
/// object_store's default (10 retries within 3 minutes): a query over a store that is
/// down would sit for minutes before saying so. Three retries are what DuckDB's httpfs
/// makes.
pub const S3_RETRIES: usize = 3;

fn retry_config() -> RetryConfig {
    RetryConfig {
        max_retries: S3_RETRIES,
        retry_timeout: std::time::Duration::from_secs(30),
        ..RetryConfig::default()
    }
}

/// An S3 client for `url`'s bucket: the environment's settings, overridden by `options`
/// (keys `aws.access_key_id`, `aws.secret_access_key`, `aws.session_token`, `aws.region`,
/// `aws.endpoint`, `aws.allow_http`).
pub fn s3_store(url: &Url, options: &HashMap<String, String>) -> Result<Arc<dyn ObjectStore>> {
    let Some(bucket) = url.host_str() else {
        return plan_err!("S3 location '{url}' has no bucket: write it as s3://bucket/path/");
    };
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_retry(retry_config());
    for (key, value) in options {
        builder = match key.strip_prefix(S3_OPTION_PREFIX) {
            Some("access_key_id") => builder.with_access_key_id(value),
            Some("secret_access_key") => builder.with_secret_access_key(value),
            Some("session_token") => builder.with_token(value),
            Some("region") => builder.with_region(value),
            Some("endpoint") => builder.with_endpoint(value),
            Some("allow_http") => builder.with_allow_http(value.eq_ignore_ascii_case("true")),
            _ => {
                return plan_err!(
                    "unknown S3 option '{key}': use aws.access_key_id, aws.secret_access_key, aws.session_token, aws.region, aws.endpoint or aws.allow_http"
                );
            }
        };
    }
    // The builder's errors name settings, never their values.
    let store = builder
        .build()
        .map_err(|e| DataFusionError::from(e).context(format!("cannot use S3 location '{url}'")))?;
    Ok(Arc::new(store))
}
