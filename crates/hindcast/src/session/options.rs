//! hindcast's session options, set with `SET hindcast.<name> = ...`.

use datafusion::common::config::{ConfigExtension, ConfigOptions};

datafusion::common::extensions_options! {
    /// hindcast's session options (`SET hindcast.<name> = ...`).
    pub struct HindcastOptions {
        /// Run `ROW_NUMBER() ... = 1` point-in-time SQL with the ASOF operator.
        pub rewrite_row_number: bool, default = true
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
