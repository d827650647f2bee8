-- The paper's Table 1 from the lake: per source #prompts, mean prompt / chosen / rejected length, #pairs.
-- Lengths are whitespace-separated words (the paper counts tokens of its tokenizer) and characters.
-- One pass over the texts for the sources and the TOTAL row (GROUPING SETS; a UNION ALL split every text twice).
SELECT CASE WHEN grouping(source) = 1 THEN 'TOTAL' ELSE source END AS source,
       count(DISTINCT prompt_id)            AS n_prompts,
       round(avg(prompt_words), 1)          AS prompt_len_words,
       round(avg(chosen_words), 1)          AS chosen_len_words,
       round(avg(rejected_words), 1)        AS rejected_len_words,
       round(avg(prompt_chars), 1)          AS prompt_len_chars,
       round(avg(chosen_chars), 1)          AS chosen_len_chars,
       round(avg(rejected_chars), 1)        AS rejected_len_chars,
       count(*)                             AS n_pairs
FROM pair_texts
WHERE origin = 'offline'
GROUP BY GROUPING SETS ((source), ())
ORDER BY grouping(source), source;
