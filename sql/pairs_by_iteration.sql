-- Every historical pair, offline (iteration 0) and online (iteration N), summarised per iteration and origin.
SELECT iteration,
       origin,
       count(*)                          AS n_pairs,
       count(DISTINCT prompt_id)         AS n_prompts,
       count(DISTINCT source)            AS n_sources,
       round(avg(margin), 4)             AS mean_margin,
       round(avg(chosen_chars), 1)       AS mean_chosen_chars,
       round(avg(rejected_chars), 1)     AS mean_rejected_chars
FROM pair_texts
GROUP BY ALL
ORDER BY iteration, origin;
