-- Prompt overlap between sources: prompts two sources share, and the share of each source's prompts.
WITH per_source AS (SELECT source, count(DISTINCT prompt_id) AS n FROM prompts GROUP BY source)
SELECT a.source AS source_a,
       b.source AS source_b,
       count(DISTINCT a.prompt_id) AS shared_prompts,
       round(100.0 * count(DISTINCT a.prompt_id) / any_value(na.n), 2) AS pct_of_a,
       round(100.0 * count(DISTINCT a.prompt_id) / any_value(nb.n), 2) AS pct_of_b
FROM prompts a
JOIN prompts b ON a.prompt_id = b.prompt_id AND a.source < b.source
JOIN per_source na ON na.source = a.source
JOIN per_source nb ON nb.source = b.source
GROUP BY a.source, b.source
ORDER BY shared_prompts DESC, source_a, source_b;
