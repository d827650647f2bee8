-- Views every query can use (run by pipelines.sql after the lake tables are registered).

-- One row per distinct prompt, with every source and split it came from.
CREATE VIEW prompt_catalog AS
SELECT prompt_id,
       any_value(prompt_text) AS prompt_text,
       any_value(n_turns) AS n_turns,
       list(DISTINCT source ORDER BY source) AS sources,
       count(DISTINCT source) AS n_sources,
       list(DISTINCT split ORDER BY split) AS splits
FROM prompts
GROUP BY prompt_id;

-- Pairs with the text of the final turns and simple lengths (characters, whitespace-separated words).
CREATE VIEW pair_texts AS
SELECT p.*,
       p.prompt[-1].content AS prompt_text,
       p.chosen[-1].content AS chosen_text,
       p.rejected[-1].content AS rejected_text,
       list_sum(list_transform(p.prompt, lambda m: length(m.content))) AS prompt_chars,
       length(p.chosen[-1].content) AS chosen_chars,
       length(p.rejected[-1].content) AS rejected_chars,
       list_sum(list_transform(p.prompt, lambda m: len(string_split_regex(trim(m.content), '\s+')))) AS prompt_words,
       len(string_split_regex(trim(p.chosen[-1].content), '\s+')) AS chosen_words,
       len(string_split_regex(trim(p.rejected[-1].content), '\s+')) AS rejected_words
FROM pairs p;

-- The last successful run of each pipeline.
CREATE VIEW latest_runs AS
SELECT * FROM runs WHERE status = 'succeeded'
QUALIFY row_number() OVER (PARTITION BY pipeline ORDER BY finished_at DESC) = 1;
