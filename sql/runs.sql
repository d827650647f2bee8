-- The run log: the latest pipeline runs with status, duration, rows and the code that ran.
SELECT run_id, pipeline, status, round(duration_s, 2) AS seconds, rows_in, rows_out, code_version, error
FROM runs
ORDER BY started_at DESC
LIMIT 50;
