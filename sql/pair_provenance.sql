-- The full provenance of one pair (--param pair_id=…). A curated pair: every copy, its raw rows, the rule and the run.
-- An online pair: its two responses (role chosen / rejected) with their sampling settings, policy, reward and reward
-- model, and the selection settings of its iteration; raw_row holds the response and its score as JSON.
WITH offline AS (
    SELECT c.pair_id,
           c.is_first_copy,
           c.source,
           c.hub_id,
           c.hub_revision,
           c.split,
           NULL::VARCHAR AS role,
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
),
selected AS (  -- the select stage that made each iteration's pairs, and the guarded append that landed them
    SELECT e.iteration, e.counts::JSON AS settings, run.code_version, run.started_at
    FROM iterations e
    LEFT JOIN runs run ON run.pipeline = 'select' AND run.status = 'succeeded'
                      AND json_extract(run.args, '$.iteration')::INTEGER = e.iteration
    WHERE e.stage = 'select' AND e.status = 'done'
    QUALIFY row_number() OVER (PARTITION BY e.iteration ORDER BY e.at DESC, run.started_at) = 1
),
online AS (
    SELECT p.pair_id,
           true AS is_first_copy,
           p.source,
           p.hub_id,
           p.hub_revision,
           p.split,
           CASE WHEN resp.response_id = p.raw_keys[1] THEN 'chosen' ELSE 'rejected' END AS role,
           resp.response_id AS raw_key,
           NULL::VARCHAR AS source_file,
           p.rule,
           p.rule_version,
           sel.settings AS rule_settings,
           p.run_id,
           sel.code_version,
           sel.started_at AS run_started_at,
           to_json({'iteration': resp.iteration, 'prompt_id': resp.prompt_id, 'sample_index': resp.sample_index,
                    'response': resp.response, 'n_tokens': resp.n_tokens, 'finish_reason': resp.finish_reason,
                    'temperature': resp.temperature, 'top_p': resp.top_p, 'max_new_tokens': resp.max_new_tokens, 'seed': resp.seed,
                    'engine': resp.engine, 'policy_model_id': resp.policy_model_id, 'generated_by': resp.run_id,
                    'reward': s.reward, 'reward_model_id': s.reward_model_id, 'scored_by': s.run_id}) AS raw_row
    FROM pairs p
    JOIN responses resp ON resp.iteration = p.iteration AND list_contains(p.raw_keys, resp.response_id)
    LEFT JOIN scores s ON s.iteration = p.iteration AND s.response_id = resp.response_id
    LEFT JOIN selected sel ON sel.iteration = p.iteration
    WHERE p.pair_id = $pair_id AND p.iteration > 0
)
SELECT * FROM offline
UNION ALL
SELECT * FROM online
ORDER BY is_first_copy DESC, source, role, raw_key;
