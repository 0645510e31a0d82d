-- Regenerates examples/feature_repo/data/*.parquet, data/transactions/ and the Delta table
-- data/user_plan/ (deterministic: no random(); delete data/transactions/ and data/user_plan/
-- first, which are created anew).
-- Run from the repository root: cargo run -p hindcast-cli -- -q -f examples/make_example_data.sql
-- 500 users, 60 days from 2025-01-01. Timestamps are UTC, in microseconds: Parquet has no
-- unit of seconds, and other readers (pyarrow, DuckDB, Feast) see a seconds column as int64.

COPY (
  SELECT
    1000 + (value * 7919) % 500 AS user_id,
    arrow_cast(to_timestamp_seconds(1735689600 + 86400 * 10 + (value * 104729) % (86400 * 50)), 'Timestamp(Microsecond, None)') AS event_timestamp,
    CAST((value * 31) % 7 = 0 AS INT) AS label
  FROM generate_series(0, 1999)
) TO 'examples/feature_repo/data/labels.parquet' STORED AS PARQUET;

-- A daily batch job writes one row per active user per day; some rows are re-computed
-- later (same event time, later created time) to exercise the tie-breaker.
COPY (
  SELECT
    user_id,
    event_timestamp,
    -- Unique per (user, event time): rows of one user differ in value by multiples of 500,
    -- so `value % 3600` seconds never repeat among them, and Feast's answer is unique too.
    event_timestamp + INTERVAL '2 hours' + CASE WHEN value % 10 = 0 THEN INTERVAL '1 day' ELSE INTERVAL '0 days' END
      + (to_timestamp_seconds(value % 3600) - to_timestamp_seconds(0)) AS created_timestamp,
    round(20 + ((value * 7907) % 8000) / 100.0, 2) AS avg_transaction_amount,
    CAST((value * 13) % 40 AS BIGINT) AS transaction_count_30d,
    round(((value * 7919) % 500000) / 100.0, 2) AS total_spend_90d,
    round(1 + ((value * 17) % 290) / 10.0, 1) AS avg_days_between_purchases,
    CASE (value * 11) % 4 WHEN 0 THEN 'grocery' WHEN 1 THEN 'electronics' WHEN 2 THEN 'travel' ELSE 'fashion' END AS preferred_category
  FROM (
    SELECT
      value,
      1000 + (value * 7919) % 500 AS user_id,
      arrow_cast(to_timestamp_seconds(1735689600 + 86400 * ((value * 15485863) % 60)), 'Timestamp(Microsecond, None)') AS event_timestamp
    FROM generate_series(0, 11999)
  )
) TO 'examples/feature_repo/data/user_spending_stats.parquet' STORED AS PARQUET;

COPY (
  SELECT
    1000 + (value * 7919) % 500 AS user_id,
    arrow_cast(to_timestamp_seconds(1735689600 + (value * 104723) % (86400 * 60)), 'Timestamp(Microsecond, None)') AS ts,
    CAST((value * 7) % 30 AS BIGINT) AS last_login_days_ago,
    CAST((value * 3) % 50 AS BIGINT) AS session_count_7d
  FROM generate_series(0, 9999)
) TO 'examples/feature_repo/data/user_activity.parquet' STORED AS PARQUET;

-- Card transactions, the raw events an aggregation view computes its windows from: 20,000
-- over the 60 days, in one directory per day (`date=2025-01-01/`, ...), with amounts, 40
-- merchants and 4 categories. A user's transactions never share a timestamp.
COPY (
  SELECT user_id, ts, amount, merchant, category, CAST(CAST(ts AS DATE) AS VARCHAR) AS date
  FROM (
    SELECT
      1000 + (value * 7919) % 500 AS user_id,
      arrow_cast(to_timestamp_seconds(1735689600 + (value * 104729 + 7) % (86400 * 60)), 'Timestamp(Microsecond, None)') AS ts,
      round(3 + ((value * 7907) % 20000) / 100.0, 2) AS amount,
      'merchant_' || CAST((value * 13) % 40 AS VARCHAR) AS merchant,
      CASE (value * 17) % 4 WHEN 0 THEN 'grocery' WHEN 1 THEN 'electronics' WHEN 2 THEN 'travel' ELSE 'fashion' END AS category
    FROM generate_series(0, 19999)
  )
) TO 'examples/feature_repo/data/transactions/' STORED AS PARQUET PARTITIONED BY (date);

-- A Delta table that a nightly job appends to: each user's plan, from sign-up (December
-- 2024), then in a second commit the changes of January and February 2025 (a third of the
-- users move to another plan). Two INSERTs, so two commits after the one that creates it.
CREATE EXTERNAL TABLE user_plan_table (user_id BIGINT, changed_at TIMESTAMP, month VARCHAR, plan VARCHAR)
  STORED AS DELTA PARTITIONED BY (month) LOCATION 'examples/feature_repo/data/user_plan/';
INSERT INTO user_plan_table
  SELECT value AS user_id,
         to_timestamp_seconds(1733011200 + (value * 7919) % (86400 * 30)) AS changed_at,
         '2024-12' AS month,
         CASE value % 3 WHEN 0 THEN 'free' WHEN 1 THEN 'plus' ELSE 'pro' END AS plan
  FROM generate_series(1000, 1499);
INSERT INTO user_plan_table
  SELECT value AS user_id,
         to_timestamp_seconds(1735689600 + (value * 104723) % (86400 * 59)) AS changed_at,
         CASE WHEN (value * 104723) % (86400 * 59) < 86400 * 31 THEN '2025-01' ELSE '2025-02' END AS month,
         CASE value % 3 WHEN 0 THEN 'plus' WHEN 1 THEN 'pro' ELSE 'free' END AS plan
  FROM generate_series(1000, 1499) WHERE value % 3 = 1 OR value % 7 = 0;
