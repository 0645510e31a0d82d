-- Plans as the shell renders them: hindcast's nodes, operators and pruning figures.
-- Timings and absolute paths are masked in the snapshot; partitions are pinned to 4.
SET datafusion.execution.target_partitions = 4;
EXPLAIN SELECT l.user_id, s.avg_transaction_amount
FROM labels l
LEFT JOIN user_spending_stats FOR SYSTEM_TIME AS OF l.event_timestamp AS s ON s.user_id = l.user_id;
EXPLAIN FORMAT tree SELECT l.user_id, s.avg_transaction_amount
FROM labels l
LEFT JOIN user_spending_stats FOR SYSTEM_TIME AS OF l.event_timestamp AS s ON s.user_id = l.user_id;
EXPLAIN ANALYZE SELECT count(s.avg_transaction_amount) AS matched
FROM labels l
LEFT JOIN user_spending_stats FOR SYSTEM_TIME AS OF l.event_timestamp AS s ON s.user_id = l.user_id;
