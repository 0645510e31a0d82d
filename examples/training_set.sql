-- Point-in-time training rows: for every label, the user's spending stats and activity as
-- known at the label's timestamp, never later. Stats older than 90 days and activity older
-- than 7 days are too stale to use (TTL); a re-computed stats row (same event time, later
-- created time) wins over the original.
-- Run from the repository root: cargo run -p hindcast-cli -- -f examples/training_set.sql

CREATE EXTERNAL TABLE labels STORED AS PARQUET LOCATION 'examples/data/labels.parquet';
CREATE EXTERNAL TABLE user_spending_stats STORED AS PARQUET LOCATION 'examples/data/user_spending_stats.parquet';
CREATE EXTERNAL TABLE user_activity STORED AS PARQUET LOCATION 'examples/data/user_activity.parquet';

SELECT
  l.user_id,
  l.event_timestamp,
  l.label,
  s.avg_transaction_amount,
  s.total_spend_90d,
  s.preferred_category,
  a.session_count_7d
FROM labels l
ASOF JOIN user_spending_stats s
  MATCH_CONDITION (l.event_timestamp >= s.event_timestamp
                   AND l.event_timestamp - s.event_timestamp <= INTERVAL '90 days'
                   AND latest_by(s.created_timestamp))
  ON l.user_id = s.user_id
ASOF JOIN user_activity a
  MATCH_CONDITION (l.event_timestamp >= a.ts AND l.event_timestamp - a.ts <= INTERVAL '7 days')
  ON l.user_id = a.user_id
ORDER BY l.event_timestamp, l.user_id
LIMIT 20;
