-- Meta-commands on the example repository, and how errors read.
\?
\d
\d user_spending_stats
\dv
\ds
\d no_such_view
\nope
SELECT user_id FROM labels WHERE;
SELECT * FROM no_such_table;
SELECT 'the shell carries on' AS after_errors;
