//! The feature store's model: feature views and services, and how a view's partitions
//! follow its time. No planning and no SQL here: the DDL that creates these runs in the
//! session (`session::ddl`), and the planners read them.
//!
//! Feature views live in DataFusion's catalog as [`FeatureViewTable`]s, so they resolve,
//! scan and get dropped like any table; feature services, which are only lists of
//! `view (features)`, live in a [`FeatureRegistry`] shared by the session and its planner.

mod files;
mod partitioning;
mod view;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

pub use files::{BadFile, file_location, is_hidden, open_problem};
pub use partitioning::TimePartitioning;
pub(crate) use view::column_list;
pub use view::{
    AGGREGATE_NAMES, AggregateFunction, Aggregation, FeatureSource, FeatureView, FeatureViewTable,
};

/// A named list of features from one or more views, as in Feast.
#[derive(Debug, Clone)]
pub struct FeatureService {
    pub name: String,
    /// Each view with the features taken from it; `None` takes all of its features.
    pub views: Vec<(String, Option<Vec<String>>)>,
}

/// The feature services of one session.
#[derive(Debug, Clone, Default)]
pub struct FeatureRegistry {
    services: Arc<RwLock<BTreeMap<String, FeatureService>>>,
}

impl FeatureRegistry {
    pub fn service(&self, name: &str) -> Option<FeatureService> {
        self.services
            .read()
            .expect("not poisoned")
            .get(name)
            .cloned()
    }

    pub fn services(&self) -> Vec<FeatureService> {
        self.services
            .read()
            .expect("not poisoned")
            .values()
            .cloned()
            .collect()
    }

    pub(crate) fn insert(&self, service: FeatureService) {
        self.services
            .write()
            .expect("not poisoned")
            .insert(service.name.clone(), service);
    }

    pub(crate) fn remove(&self, name: &str) -> Option<FeatureService> {
        self.services.write().expect("not poisoned").remove(name)
    }
}
