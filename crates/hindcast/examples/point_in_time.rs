//! Point-in-time join from Rust: register a spine from Arrow batches and a feature table
//! from Parquet, then ask for the features as of each label.
//!
//! Run from the repository root: `cargo run -p hindcast --example point_in_time`

use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch, TimestampSecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::common::Result;
use hindcast::Hindcast;

#[tokio::main]
async fn main() -> Result<()> {
    let hc = Hindcast::new();
    hc.register_parquet(
        "user_spending_stats",
        "examples/feature_repo/data/user_spending_stats.parquet",
    )
    .await?;

    // The spine: which users we want to score, and when. 2025-02-01 and 2025-02-15, UTC.
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Int64, false),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Second, None),
            false,
        ),
    ]));
    let spine = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![1000, 1001, 1000])),
            Arc::new(TimestampSecondArray::from(vec![
                1_738_368_000,
                1_738_368_000,
                1_739_577_600,
            ])),
        ],
    )?;
    hc.register_batches("spine", vec![spine])?;

    hc.sql(
        "SELECT s.user_id, s.event_timestamp, f.event_timestamp AS feature_time,
                f.avg_transaction_amount, f.preferred_category
         FROM spine s
         ASOF JOIN user_spending_stats f
           MATCH_CONDITION (s.event_timestamp >= f.event_timestamp
                            AND s.event_timestamp - f.event_timestamp <= INTERVAL '90 days'
                            AND latest_by(f.created_timestamp))
           ON s.user_id = f.user_id
         ORDER BY s.event_timestamp, s.user_id",
    )
    .await?
    .show()
    .await
}
