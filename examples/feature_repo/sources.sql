-- The spine: labelled events (user, time, churned?) to build training rows for.
CREATE EXTERNAL TABLE labels STORED AS PARQUET LOCATION 'data/labels.parquet';
