-- The features the churn model trains on.
CREATE FEATURE SERVICE churn_model AS
  user_spending_stats (avg_transaction_amount, total_spend_90d, preferred_category),
  user_activity (session_count_7d);
