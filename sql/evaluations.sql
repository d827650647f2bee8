-- Did the policy get better? Per iteration, its new policy against the previous one and against π0 under each judge
-- (win rate with ties as half, in percent, with its bootstrap 95% interval; ties; length-controlled win rate), and the
-- new policy's own mean reward under that judge, mean length and KL estimate to π0.
WITH e AS (SELECT * FROM evaluations WHERE iteration > 0),
own AS (
    SELECT iteration, policy_model_id, eval_key,
           any_value(value) FILTER (metric = 'mean_chars')      AS mean_chars,
           any_value(value) FILTER (metric = 'kl_to_reference') AS kl_to_pi0
    FROM e WHERE judge IS NULL GROUP BY ALL
),
reward AS (
    SELECT iteration, policy_model_id, eval_key, judge, any_value(value) AS mean_reward
    FROM e WHERE metric = 'mean_reward' GROUP BY ALL
)
SELECT h.iteration, h.judge, h.opponent,
       round(100 * any_value(h.value) FILTER (h.metric = 'win_rate'), 1)    AS win_pct,
       '[' || round(100 * any_value(h.ci_low) FILTER (h.metric = 'win_rate'), 1) || ', '
           || round(100 * any_value(h.ci_high) FILTER (h.metric = 'win_rate'), 1) || ']' AS win_ci95,
       round(100 * any_value(h.value) FILTER (h.metric = 'tie_rate'), 1)    AS ties_pct,
       round(100 * any_value(h.value) FILTER (h.metric = 'lc_win_rate'), 1) AS lc_win_pct,
       round(any_value(r.mean_reward), 3) AS mean_reward,
       round(any_value(o.mean_chars), 1)  AS mean_chars,
       round(any_value(o.kl_to_pi0), 3)   AS kl_to_pi0,
       any_value(h.n_prompts)             AS n_prompts
FROM e h
JOIN own o USING (iteration, policy_model_id, eval_key)
JOIN reward r USING (iteration, policy_model_id, eval_key, judge)
WHERE h.opponent IS NOT NULL
GROUP BY h.iteration, h.judge, h.opponent
ORDER BY h.iteration, h.judge DESC, h.opponent DESC;
