-- A daily batch job's output: one row per active user per day. Some rows were re-computed
-- later (same event time, later created time); the later computation wins.
CREATE FEATURE VIEW user_spending_stats
  ENTITY (user_id)
  TIMESTAMP event_timestamp
  CREATED created_timestamp
  TTL INTERVAL '90 days'
  STORED AS PARQUET
  LOCATION 'data/user_spending_stats.parquet';

-- Activity older than a week says nothing about the user today.
CREATE FEATURE VIEW user_activity
  ENTITY (user_id)
  TIMESTAMP ts
  TTL INTERVAL '7 days'
  STORED AS PARQUET
  LOCATION 'data/user_activity.parquet';
