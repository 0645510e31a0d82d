//! The feature store: feature views and services, their DDL, and feature repositories.
//!
//! Feature views live in DataFusion's catalog as [`FeatureViewTable`]s, so they resolve,
//! scan and get dropped like any table; feature services, which are only lists of
//! `view (features)`, live in a [`FeatureRegistry`] shared by the session and its planner.

mod ddl;
mod repository;
mod view;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

pub(crate) use ddl::{execute_ddl, resolve_location};
pub use repository::load_repository;
pub(crate) use view::column_list;
pub use view::{FeatureSource, FeatureView, FeatureViewTable};

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

    fn insert(&self, service: FeatureService) {
        self.services
            .write()
            .expect("not poisoned")
            .insert(service.name.clone(), service);
    }

    fn remove(&self, name: &str) -> Option<FeatureService> {
        self.services.write().expect("not poisoned").remove(name)
    }
}
