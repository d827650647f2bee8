-- Filter accounting per source for the last curation run: raw rows in = paired + filtered + quarantined.
WITH last AS (SELECT run_id FROM latest_runs WHERE pipeline = 'curate'),
rows AS (SELECT c.* FROM run_counts c JOIN last USING (run_id) WHERE level = 'row'),
per_source AS (
    SELECT source,
           coalesce(sum(n) FILTER (outcome = 'in'), 0)::BIGINT          AS rows_in,
           coalesce(sum(n) FILTER (outcome = 'paired'), 0)::BIGINT      AS paired,
           coalesce(sum(n) FILTER (outcome = 'filtered'), 0)::BIGINT    AS filtered,
           coalesce(sum(n) FILTER (outcome = 'quarantined'), 0)::BIGINT AS quarantined,
           string_agg(rule || '=' || n, ', ' ORDER BY n DESC, rule) FILTER (outcome = 'filtered')    AS filtered_by,
           string_agg(rule || '=' || n, ', ' ORDER BY n DESC, rule) FILTER (outcome = 'quarantined') AS quarantined_by
    FROM rows
    GROUP BY source
)
SELECT source, rows_in, paired, filtered, quarantined,
       rows_in = paired + filtered + quarantined AS balanced,
       filtered_by, quarantined_by
FROM per_source
ORDER BY source;
