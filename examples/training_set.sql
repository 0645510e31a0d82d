-- Point-in-time training rows for the churn model: for every label, the features of the
-- `churn_model` service and the user's plan (a Delta table) as known at the label's
-- timestamp, never later, within each view's TTL, and what the user's transactions add up
-- to over the windows that end at that timestamp (an aggregation view). The feature views
-- and the service are defined in examples/feature_repo/.
-- Run from the repository root:
--   cargo run -p hindcast-cli -- --repo examples/feature_repo -f examples/training_set.sql
-- then check it (leakage, files, nulls) against the manifest written with it:
--   cargo run -p hindcast-cli -- validate target/training_set --max-null-fraction 0.2

-- The whole training set, written atomically (a failed write leaves nothing behind), with
-- its manifest (target/training_set/_hindcast.json: the query, the views and the versions
-- it read, row and null counts, and the joins' leakage check).
COPY (SELECT * FROM historical_features('labels', 'churn_model', 'user_plan:plan',
        'user_transactions:txn_count_30d', 'user_transactions:avg_amount_30d',
        'user_transactions:merchants_7d'))
  TO 'target/training_set/' STORED AS PARQUET;

-- A look at the first rows, written the SQL way: a temporal join per feature view.
SELECT l.user_id, l.event_timestamp, l.label,
       s.avg_transaction_amount, s.total_spend_90d, s.preferred_category,
       a.session_count_7d, p.plan, t.txn_count_30d, t.spend_90d, t.last_category
FROM labels l
LEFT JOIN user_spending_stats FOR SYSTEM_TIME AS OF l.event_timestamp AS s
  ON s.user_id = l.user_id
LEFT JOIN user_activity FOR SYSTEM_TIME AS OF l.event_timestamp AS a
  ON a.user_id = l.user_id
LEFT JOIN user_plan FOR SYSTEM_TIME AS OF l.event_timestamp AS p
  ON p.user_id = l.user_id
LEFT JOIN user_transactions FOR SYSTEM_TIME AS OF l.event_timestamp AS t
  ON t.user_id = l.user_id
ORDER BY l.event_timestamp, l.user_id
LIMIT 10;
