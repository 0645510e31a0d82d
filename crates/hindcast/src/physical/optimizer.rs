//! hindcast's physical optimizer rules.

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::{ChildrenPropertiesMode, ExecutionPlan, ReplaceChildrenOptions};

use super::AsOfJoinExec;
use super::key_time_sort::KeyTimeSortExec;

/// The physical optimizer's last step: the `SortExec`s directly under an ASOF join become
/// [`KeyTimeSortExec`]s. It runs after DataFusion's own rules, so the sorts it finds are
/// the ones `EnforceSorting` decided are needed, with the filters pushed below them.
#[derive(Debug)]
pub struct UseKeyTimeSort {
    /// Whether a query's configuration asks for hindcast's sort: the switch is a session
    /// option, which this layer does not know.
    enabled: fn(&ConfigOptions) -> bool,
}

impl UseKeyTimeSort {
    pub fn new(enabled: fn(&ConfigOptions) -> bool) -> Self {
        Self { enabled }
    }
}

impl PhysicalOptimizerRule for UseKeyTimeSort {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !(self.enabled)(config) {
            return Ok(plan);
        }
        plan.transform_up(|node| {
            if node.downcast_ref::<AsOfJoinExec>().is_none() {
                return Ok(Transformed::no(node));
            }
            let mut changed = false;
            let children = node
                .children()
                .into_iter()
                .map(|child| match child.downcast_ref::<SortExec>() {
                    Some(sort) => match KeyTimeSortExec::try_replace(sort) {
                        Some(replacement) => {
                            changed = true;
                            Arc::new(replacement) as Arc<dyn ExecutionPlan>
                        }
                        None => Arc::clone(child),
                    },
                    None => Arc::clone(child),
                })
                .collect();
            if changed {
                // Same properties: the replacement sorts exactly as the SortExec did.
                let options = ReplaceChildrenOptions::new(ChildrenPropertiesMode::Keep);
                Ok(Transformed::yes(node.replace_children(children, options)?))
            } else {
                Ok(Transformed::no(node))
            }
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "UseKeyTimeSort"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
