//! hindcast's session options, set with `SET hindcast.<name> = ...`.

use std::fmt;

use datafusion::common::config::{ConfigExtension, ConfigField, ConfigOptions, Visit};
use datafusion::common::{Result, config_err, plan_err};
use url::Url;

datafusion::common::extensions_options! {
    /// hindcast's session options (`SET hindcast.<name> = ...`).
    pub struct HindcastOptions {
        /// Run `ROW_NUMBER() ... = 1` point-in-time SQL with the ASOF operator.
        pub rewrite_row_number: bool, default = true
        /// Sort the ASOF join's inputs with hindcast's key-time sort (spilling sorted runs
        /// under a memory limit); off: DataFusion's `SortExec`.
        pub key_time_sort: bool, default = true
        /// The `hindcast worker`s queries run on (`host:port,host:port,...`); empty: in
        /// this process.
        pub workers: WorkerList, default = WorkerList::default()
    }
}

impl ConfigExtension for HindcastOptions {
    const PREFIX: &'static str = "hindcast";
}

impl HindcastOptions {
    /// Whether `config` asks for the `ROW_NUMBER` rewrite (the default).
    pub fn rewrite_row_number(config: &ConfigOptions) -> bool {
        config
            .extensions
            .get::<HindcastOptions>()
            .is_none_or(|o| o.rewrite_row_number)
    }

    /// Whether `config` asks for hindcast's key-time sort under ASOF joins (the default).
    pub fn key_time_sort(config: &ConfigOptions) -> bool {
        config
            .extensions
            .get::<HindcastOptions>()
            .is_none_or(|o| o.key_time_sort)
    }

    /// The workers `config` runs queries on (none: this process).
    pub fn workers(config: &ConfigOptions) -> Vec<Url> {
        config
            .extensions
            .get::<HindcastOptions>()
            .map(|o| o.workers.urls().to_vec())
            .unwrap_or_default()
    }
}

/// The workers of `hindcast.workers`: `host:port` or `http://host:port`, comma-separated.
/// Checked when set, so a `SET` with a bad address fails there, not at the next query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerList(Vec<Url>);

impl WorkerList {
    /// Parse addresses as `--workers` and `SET hindcast.workers` take them.
    pub fn parse<S: AsRef<str>>(addresses: impl IntoIterator<Item = S>) -> Result<Self> {
        let mut urls = vec![];
        for address in addresses {
            for part in address.as_ref().split(',') {
                if part.trim().is_empty() {
                    continue;
                }
                let url = worker_url(part)?;
                // A worker listed twice would get two tasks of a stage.
                if !urls.contains(&url) {
                    urls.push(url);
                }
            }
        }
        Ok(Self(urls))
    }

    pub fn urls(&self) -> &[Url] {
        &self.0
    }
}

impl fmt::Display for WorkerList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: Vec<&str> = self.0.iter().map(|u| u.as_str()).collect();
        f.write_str(&shown.join(","))
    }
}

impl ConfigField for WorkerList {
    fn visit<V: Visit>(&self, v: &mut V, key: &str, description: &'static str) {
        v.some(key, self, description)
    }

    // No `reset`: DataFusion's `RESET` only knows its own options; `SET hindcast.workers =
    // ''` is the way back to one process.
    fn set(&mut self, key: &str, value: &str) -> Result<()> {
        if !key.is_empty() {
            return config_err!("hindcast.workers has no setting {key:?}");
        }
        *self = Self::parse([value])?;
        Ok(())
    }
}

/// `host:port` or `http://host:port` (workers serve plain HTTP/2; no path).
fn worker_url(text: &str) -> Result<Url> {
    let text = text.trim();
    let with_scheme = match text.contains("://") {
        true => text.to_string(),
        false => format!("http://{text}"),
    };
    match Url::parse(&with_scheme) {
        Ok(url)
            if url.scheme() == "http"
                && url.host().is_some()
                && url.port().is_some()
                && url.path() == "/"
                && url.query().is_none() =>
        {
            Ok(url)
        }
        _ => plan_err!("the worker address {text:?} is not host:port or http://host:port"),
    }
}

/// A memory size as people write it: `512M`, `2G`, `64k` or plain bytes (binary units).
pub fn parse_memory_limit(text: &str) -> std::result::Result<usize, String> {
    let text = text.trim();
    let (number, unit) = match text
        .char_indices()
        .find(|(_, c)| !c.is_ascii_digit() && *c != '.')
    {
        Some((i, _)) => text.split_at(i),
        None => (text, ""),
    };
    let factor: f64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1.0,
        "K" | "KB" | "KIB" => 1024.0,
        "M" | "MB" | "MIB" => 1024.0 * 1024.0,
        "G" | "GB" | "GIB" => 1024.0 * 1024.0 * 1024.0,
        "T" | "TB" | "TIB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => {
            return Err(format!(
                "unknown unit in memory limit {text:?}: use K, M, G or T, e.g. 512M"
            ));
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("memory limit {text:?} is not a size such as 512M or 2G"))?;
    if value <= 0.0 || !value.is_finite() {
        return Err(format!("memory limit {text:?} must be positive"));
    }
    Ok((value * factor) as usize)
}
