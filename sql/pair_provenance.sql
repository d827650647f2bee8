-- The full provenance of one pair (--param pair_id=…): every copy, its raw rows, the rule and the run.
SELECT c.pair_id,
       c.is_first_copy,
       c.source,
       c.hub_id,
       c.hub_revision,
       c.split,
       r.raw_key,
       r.source_file,
       c.rule,
       c.rule_version,
       json_extract(run.settings, '$.' || c.source) AS rule_settings,
       c.run_id,
       run.code_version,
       run.started_at AS run_started_at,
       r.row_json AS raw_row
FROM pair_sources c
LEFT JOIN runs run ON run.run_id = c.run_id
LEFT JOIN raw_rows r ON r.source = c.source AND list_contains(c.raw_keys, r.raw_key)
WHERE c.pair_id = $pair_id
ORDER BY c.is_first_copy DESC, c.source, r.raw_key;
