-- Point-in-time training rows for the churn model: for every label, the features of the
-- `churn_model` service as known at the label's timestamp, never later, within each view's
-- TTL. The feature views and the service are defined in examples/feature_repo/.
-- Run from the repository root:
--   cargo run -p hindcast-cli -- --repo examples/feature_repo -f examples/training_set.sql

-- The whole training set, written atomically (a failed write leaves nothing behind).
COPY (SELECT * FROM historical_features('labels', 'churn_model'))
  TO 'target/training_set.parquet' STORED AS PARQUET;

-- A look at the first rows, written the SQL way: a temporal join per feature view.
SELECT l.user_id, l.event_timestamp, l.label,
       s.avg_transaction_amount, s.total_spend_90d, s.preferred_category,
       a.session_count_7d, p.plan
FROM labels l
LEFT JOIN user_spending_stats FOR SYSTEM_TIME AS OF l.event_timestamp AS s
  ON s.user_id = l.user_id
LEFT JOIN user_activity FOR SYSTEM_TIME AS OF l.event_timestamp AS a
  ON a.user_id = l.user_id
LEFT JOIN user_plan FOR SYSTEM_TIME AS OF l.event_timestamp AS p
  ON p.user_id = l.user_id
ORDER BY l.event_timestamp, l.user_id
LIMIT 10;
