-- Result display in the shell: formats, NULL, time zones, the row footer, expanded rows.
SELECT user_id, event_timestamp, label FROM labels ORDER BY event_timestamp, user_id LIMIT 3;
SELECT CAST(NULL AS INT) AS nothing, 'text' AS word,
       TIMESTAMP '2025-03-01 12:00:00' AS naive,
       arrow_cast(TIMESTAMP '2025-03-01 12:00:00', 'Timestamp(Microsecond, Some("UTC"))') AS utc,
       arrow_cast(TIMESTAMP '2025-03-01 12:00:00', 'Timestamp(Microsecond, Some("+05:30"))') AS india;
\maxrows 2
SELECT user_id FROM labels ORDER BY user_id, event_timestamp LIMIT 5;
\maxrows 40
\format csv
SELECT user_id, label FROM labels ORDER BY user_id, event_timestamp LIMIT 2;
\format tsv
SELECT user_id, label FROM labels ORDER BY user_id, event_timestamp LIMIT 2;
\format json
SELECT user_id, CAST(NULL AS INT) AS nothing FROM labels ORDER BY user_id, event_timestamp LIMIT 2;
\format ndjson
SELECT user_id, label FROM labels ORDER BY user_id, event_timestamp LIMIT 2;
\pset format table
\x
SELECT user_id, event_timestamp, label FROM labels ORDER BY user_id, event_timestamp LIMIT 2;
\x
\timing off
SELECT 1 AS one;
