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

-- Words in a text: its runs of characters other than space, tab, newline, form feed and carriage return (what
-- the regex \S+ matches in DuckDB). Whitespace mapped to spaces and a plain split, not a regex split: 5-6x faster
-- (table1 over 489,880 pairs: 11.7 s with string_split_regex), and an empty text has no words, not one.
CREATE MACRO word_count(text) AS
    len(list_filter(string_split(replace(replace(replace(replace(text, chr(9), ' '), chr(10), ' '), chr(12), ' '), chr(13), ' '), ' '),
                    lambda w: w <> ''));

-- Pairs with the text of the final turns and simple lengths (characters, words).
CREATE VIEW pair_texts AS
SELECT p.*,
       p.prompt[-1].content AS prompt_text,
       p.chosen[-1].content AS chosen_text,
       p.rejected[-1].content AS rejected_text,
       list_sum(list_transform(p.prompt, lambda m: length(m.content))) AS prompt_chars,
       length(p.chosen[-1].content) AS chosen_chars,
       length(p.rejected[-1].content) AS rejected_chars,
       list_sum(list_transform(p.prompt, lambda m: word_count(m.content))) AS prompt_words,
       word_count(p.chosen[-1].content) AS chosen_words,
       word_count(p.rejected[-1].content) AS rejected_words
FROM pairs p;

-- The last successful run of each pipeline.
CREATE VIEW latest_runs AS
SELECT * FROM runs WHERE status = 'succeeded'
QUALIFY row_number() OVER (PARTITION BY pipeline ORDER BY finished_at DESC) = 1;
