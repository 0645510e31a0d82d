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
