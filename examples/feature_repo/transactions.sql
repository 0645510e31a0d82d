-- What each user's card transactions add up to at the label's instant, computed from the
-- raw events for every label (not by a daily job): each window ends at the label's time,
-- both ends inclusive, so a transaction at 17:00 counts for a label at 17:00.
CREATE FEATURE VIEW user_transactions
  ENTITY (user_id)
  TIMESTAMP ts
  AGGREGATE (
    count(*)                 OVER INTERVAL '30 days' AS txn_count_30d,
    sum(amount)              OVER INTERVAL '90 days' AS spend_90d,
    avg(amount)              OVER INTERVAL '30 days' AS avg_amount_30d,
    max(amount)              OVER INTERVAL '1 day'   AS max_amount_1d,
    count(DISTINCT merchant) OVER INTERVAL '7 days'  AS merchants_7d,
    last(category)           OVER INTERVAL '90 days' AS last_category)
  STORED AS PARQUET
  PARTITIONED BY (date)
  LOCATION 'data/transactions/';
