-- Each user's plan as a nightly job appends it to a Delta table (data/user_plan/, with its
-- _delta_log). Unpinned, the view reads the newest version; OPTIONS ('version' 'N') would
-- pin the snapshot a training set was built from.
CREATE FEATURE VIEW user_plan
  ENTITY (user_id)
  TIMESTAMP changed_at
  STORED AS DELTA
  LOCATION 'data/user_plan/';
