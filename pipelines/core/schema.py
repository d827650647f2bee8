"""Arrow schemas of the lake's tables, in one place.

Layers: ``raw_<source>`` (bronze: raw rows exactly as ingested, one table per source, in that source's own
schema plus ingest columns), ``pairs`` (silver: every preference pair, offline and online, in one standard
schema), ``pair_sources`` (every copy of a pair seen, with its provenance: dedup keeps them all),
``quarantine`` (every rejected row, response or candidate pair, with the rule and reason), ``prompts``
(deduplicated prompts per source), ``runs`` and ``run_counts`` (the run log and its filter accounting).
"""

from __future__ import annotations

import pyarrow as pa
# The table and source names live in core.names, so that a parser can show them without pyarrow; they are the schema's too.
from prefhouse.pipelines.core.names import (
    OFFLINE_SOURCES, ONLINE_SOURCE, FILTER, INVALID, EVAL_SPLIT, PAIRS,  # noqa: F401
    PAIR_SOURCES, QUARANTINE, PROMPTS, RUNS, RUN_COUNTS, VALIDATIONS,  # noqa: F401
    RESPONSES, SCORES, MODELS, ITERATIONS, TRAINING_PAIRS, REFERENCE_LOGPS,  # noqa: F401
    DRAWN_PROMPTS, EVAL_PROMPTS, EVAL_RESPONSES, EVAL_SCORES, EVALUATIONS, TRAINING_LOGS,  # noqa: F401
)

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
MESSAGES = pa.list_(MESSAGE)
TIMESTAMP = pa.timestamp("us", tz="UTC")


def raw_table(source: str) -> str:
    return f"raw_{source}"


# The standard pair. `iteration` is 0 for curated (offline) data and N for pairs the online iteration N made;
# `origin` says the same in words, so one table holds the whole history and a WHERE tells them apart.
PAIR_SCHEMA = pa.schema(
    [
        ("pair_id", pa.string()),  # md5 of normalised prompt + chosen reply + rejected reply
        ("prompt_id", pa.string()),  # md5 of the normalised prompt messages
        ("prompt", MESSAGES),  # context: optional system turn, then user/assistant turns ending in user
        ("chosen", MESSAGES),  # prompt + preferred assistant reply ("standard format")
        ("rejected", MESSAGES),  # prompt + dispreferred assistant reply
        ("chosen_score", pa.float64()),
        ("rejected_score", pa.float64()),
        ("margin", pa.float64()),  # chosen_score - rejected_score where both exist
        ("score_kind", pa.string()),  # what the scores are (e.g. ultrafeedback_fine_grained_mean, reward_model)
        ("chosen_model", pa.string()),  # the model that wrote the reply, where known
        ("rejected_model", pa.string()),
        ("origin", pa.string()),  # offline | online
        ("iteration", pa.int32()),  # partition: 0 offline, N online
        ("source", pa.string()),  # partition: dataset name offline, "online" for generated pairs
        ("hub_id", pa.string()),
        ("hub_revision", pa.string()),
        ("split", pa.string()),
        ("raw_keys", pa.list_(pa.string())),  # keys of the raw rows (in raw_<source>) the pair came from
        ("rule", pa.string()),  # the adapter / selection rule that admitted the pair
        ("rule_version", pa.string()),
        ("reward_model_id", pa.string()),  # online pairs: the reward model that ranked them
        ("policy_model_id", pa.string()),  # online pairs: the policy that generated them
        ("run_id", pa.string()),
        ("created_at", TIMESTAMP),
    ]
)
PAIR_PARTITIONS = ["iteration", "source"]

PAIR_SOURCE_SCHEMA = pa.schema(
    [
        ("copy_id", pa.string()),  # md5(pair_id, source, split, raw_keys, item): one row per copy ever seen
        ("pair_id", pa.string()),
        ("is_first_copy", pa.bool_()),  # the copy whose provenance the pairs row carries
        ("source", pa.string()),
        ("hub_id", pa.string()),
        ("hub_revision", pa.string()),
        ("split", pa.string()),
        ("raw_keys", pa.list_(pa.string())),
        ("item", pa.string()),  # which comparison within the raw row(s), e.g. "1 vs 3"
        ("rule", pa.string()),
        ("rule_version", pa.string()),
        ("run_id", pa.string()),
        ("created_at", TIMESTAMP),
    ]
)

QUARANTINE_SCHEMA = pa.schema(
    [
        ("quarantine_id", pa.string()),  # md5(source, split, raw_keys, item, level, rule): idempotent re-runs
        ("source", pa.string()),
        ("split", pa.string()),
        ("raw_keys", pa.list_(pa.string())),
        ("item", pa.string()),  # the response or comparison within the row(s), e.g. "1 vs 3"; null for a row
        ("level", pa.string()),  # row | response | pair
        ("kind", pa.string()),  # filter (a recipe rule dropped it) | invalid (malformed or contradictory)
        ("rule", pa.string()),
        ("rule_version", pa.string()),
        ("reason", pa.string()),
        ("run_id", pa.string()),
        ("created_at", TIMESTAMP),
    ]
)

PROMPT_SCHEMA = pa.schema(
    [
        ("prompt_id", pa.string()),
        ("source", pa.string()),
        ("split", pa.string()),  # the hub split it came from; with raw_key, the prompt's origin
        ("raw_key", pa.string()),  # the first raw row of (source, split) that holds it
        ("prompt", MESSAGES),
        ("prompt_text", pa.string()),  # the last user turn, for reading and searching
        ("n_turns", pa.int32()),
        ("run_id", pa.string()),
        ("created_at", TIMESTAMP),
    ]
)

RUN_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("pipeline", pa.string()),
        ("status", pa.string()),  # succeeded | failed
        ("started_at", TIMESTAMP),
        ("finished_at", TIMESTAMP),
        ("duration_s", pa.float64()),
        ("args", pa.string()),  # JSON
        ("settings", pa.string()),  # JSON, every rule with its version
        ("code_version", pa.string()),
        ("packages", pa.string()),  # JSON name -> version
        ("inputs", pa.string()),  # JSON: files or hub ids with revisions
        ("versions_before", pa.string()),  # JSON table -> version
        ("versions_after", pa.string()),
        ("rows_in", pa.int64()),
        ("rows_out", pa.int64()),
        ("timings", pa.string()),  # JSON stage -> seconds
        ("error", pa.string()),
    ]
)

RUN_COUNT_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("source", pa.string()),
        ("level", pa.string()),  # row: raw-row accounting; response: responses rejected; pair: candidate pairs
        ("outcome", pa.string()),  # rows: paired | filtered | quarantined; pairs: kept | new | duplicate | filtered | quarantined
        ("rule", pa.string()),
        ("n", pa.int64()),
    ]
)

# Online iteration N: n sampled responses per prompt (partition iteration), then one reward per response.
RESPONSE_SCHEMA = pa.schema(
    [
        ("response_id", pa.string()),  # md5(prompt_id, iteration, sample_index, policy_model_id)
        ("prompt_id", pa.string()),
        ("iteration", pa.int32()),
        ("sample_index", pa.int32()),  # 0 .. n-1
        ("prompt", MESSAGES),
        ("response", pa.string()),
        ("n_tokens", pa.int32()),
        ("finish_reason", pa.string()),  # stop | length
        ("temperature", pa.float64()),
        ("top_p", pa.float64()),
        ("max_new_tokens", pa.int32()),
        ("seed", pa.int64()),
        ("engine", pa.string()),  # vllm | transformers
        ("policy_model_id", pa.string()),
        ("run_id", pa.string()),
        ("created_at", TIMESTAMP),
        ("executor", pa.string()),  # local (the driver's process) | ray (a replica of a Ray actor pool)
        ("worker", pa.string()),  # the process that made it: host/pid (Ray: node id/pid): "which machine made this" in SQL
    ]
)

SCORE_SCHEMA = pa.schema(
    [
        ("response_id", pa.string()),
        ("prompt_id", pa.string()),
        ("iteration", pa.int32()),
        ("reward", pa.float64()),
        ("reward_model_id", pa.string()),
        ("run_id", pa.string()),
        ("created_at", TIMESTAMP),
        # how the sequence was fitted to score.max_length: none | prompt (cut from the left) | response (scored on its start)
        ("truncation", pa.string()),
        ("executor", pa.string()),  # local | ray, as for responses
        ("worker", pa.string()),
    ]
)

# The online iteration's stage log: one row per stage event (started / done / failed) of iteration N.
ITERATION_SCHEMA = pa.schema(
    [
        ("iteration", pa.int32()),
        ("stage", pa.string()),  # prompts | generate | score | select | report | train
        ("status", pa.string()),  # started | done | failed
        ("run_id", pa.string()),
        ("policy_model_id", pa.string()),
        ("reward_model_id", pa.string()),
        ("versions_read", pa.string()),  # JSON table -> version
        ("versions_written", pa.string()),
        ("counts", pa.string()),  # JSON
        ("seconds", pa.float64()),
        ("error", pa.string()),
        ("at", TIMESTAMP),
    ]
)

# Every training run (reward model, DPO): what it read, how, and what it produced.
MODEL_SCHEMA = pa.schema(
    [
        ("model_id", pa.string()),
        ("job_kind", pa.string()),  # reward_model | dpo
        ("base_model", pa.string()),
        ("reference_model", pa.string()),  # DPO: the reference policy
        ("snapshot_hash", pa.string()),
        ("snapshot", pa.string()),  # JSON: table versions + selection
        ("train_pairs", pa.int64()),
        ("eval_pairs", pa.int64()),
        ("hyperparameters", pa.string()),  # JSON
        ("metrics", pa.string()),  # JSON
        ("quality", pa.string()),  # JSON: the quality report it read, its status, any override
        ("code_version", pa.string()),
        ("packages", pa.string()),  # JSON
        ("output_path", pa.string()),
        ("status", pa.string()),  # succeeded | failed
        ("run_id", pa.string()),
        ("created_at", TIMESTAMP),
    ]
)

# Lineage at pair granularity: which pairs trained (or evaluated) which model.
TRAINING_PAIR_SCHEMA = pa.schema(
    [("model_id", pa.string()), ("pair_id", pa.string()), ("split", pa.string()), ("snapshot_hash", pa.string())]
)

# The prompts online iteration N drew (stage 1), in draw order: what its later stages read, and resume from.
DRAWN_PROMPT_SCHEMA = pa.schema(
    [
        ("iteration", pa.int32()),
        ("draw_rank", pa.int32()),
        ("prompt_id", pa.string()),
        ("source", pa.string()),
        ("prompt", MESSAGES),
        ("prompt_text", pa.string()),
        ("seed", pa.int64()),
        ("run_id", pa.string()),
        ("created_at", TIMESTAMP),
    ]
)

# The fixed evaluation prompt set, drawn once (evaluation splits first, then a held-out slice of the pool) and
# never drawn by an online iteration.
EVAL_PROMPT_SCHEMA = pa.schema(
    [
        ("eval_rank", pa.int32()),
        ("prompt_id", pa.string()),
        ("source", pa.string()),
        ("split", pa.string()),
        ("origin", pa.string()),  # evaluation_split | other_source (a source the online draw does not use) | held_out (out of the draw's pool)
        ("prompt", MESSAGES),
        ("prompt_text", pa.string()),
        ("seed", pa.int64()),
        ("run_id", pa.string()),
        ("created_at", TIMESTAMP),
    ]
)

# A policy's answers to the evaluation prompts (partition: the iteration whose evaluate stage made them, 0 for
# a standalone ``prefhouse evaluate``), with their log-probabilities under the policy and under π0 (the KL estimate).
EVAL_RESPONSE_SCHEMA = pa.schema(
    [f for f in RESPONSE_SCHEMA if f.name not in ("run_id", "created_at")]
    + [
        ("eval_key", pa.string()),  # digest of the evaluation's sampling settings: answers under other settings are other rows
        ("logp", pa.float64()),  # sum of the response tokens' log-probabilities under the policy that wrote it
        ("reference_logp", pa.float64()),  # the same under the reference policy (π0)
        ("reference_model_id", pa.string()),
        ("run_id", pa.string()),
        ("created_at", TIMESTAMP),
    ]
)

# One reward per (evaluation answer, judge): the proxy reward model DPO's pairs were selected by, and a second judge.
EVAL_SCORE_SCHEMA = pa.schema(
    [
        ("score_id", pa.string()),  # md5(response_id, judge_model_id)
        ("response_id", pa.string()),
        ("iteration", pa.int32()),
        ("judge_model_id", pa.string()),
        ("judge_role", pa.string()),  # proxy | second
        ("reward", pa.float64()),
        ("run_id", pa.string()),
        ("created_at", TIMESTAMP),
    ]
)

# Metrics per iteration: one row per (policy, opponent, judge, metric), with a bootstrap interval over prompts.
EVALUATION_SCHEMA = pa.schema(
    [
        ("iteration", pa.int32()),
        ("policy_model_id", pa.string()),
        ("opponent", pa.string()),  # previous | initial | null (a metric of the policy alone)
        ("opponent_model_id", pa.string()),
        ("judge", pa.string()),  # proxy | second | null (lengths, KL)
        ("judge_model_id", pa.string()),
        ("metric", pa.string()),  # win_rate | tie_rate | lc_win_rate | mean_reward | mean_chars | mean_tokens | kl_to_reference
        ("value", pa.float64()),
        ("ci_low", pa.float64()),
        ("ci_high", pa.float64()),
        ("n_prompts", pa.int32()),
        ("eval_key", pa.string()),
        ("run_id", pa.string()),
        ("created_at", TIMESTAMP),
    ]
)

# Every step the Trainer logged in a reward-model or DPO run (its curves), long format.
TRAINING_LOG_SCHEMA = pa.schema(
    [
        ("model_id", pa.string()),
        ("job_kind", pa.string()),
        ("step", pa.int64()),
        ("epoch", pa.float64()),
        ("metric", pa.string()),
        ("value", pa.float64()),
    ]
)

# DPO reference log-probabilities, computed once per (pair, reference model, encoding) and reused across epochs
# and iterations. encoding_key names what changes the numbers besides the model: chat template, max_length,
# truncation mode (training.reference_logps.encoding_key).
REFERENCE_LOGP_SCHEMA = pa.schema(
    [
        ("pair_id", pa.string()),
        ("reference_model_id", pa.string()),
        ("encoding_key", pa.string()),
        ("chosen_logp", pa.float64()),
        ("rejected_logp", pa.float64()),
        ("run_id", pa.string()),
        ("created_at", TIMESTAMP),
    ]
)

# One row per quality gate per table per run (quality.gates): queryable history of every check.
VALIDATION_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("table_name", pa.string()),
        ("table_version", pa.int64()),  # version the guarded commit produced; null when aborted, or for "raw" (the bronze tables, judged together)
        ("suite", pa.string()),
        ("suite_version", pa.string()),
        ("gate", pa.string()),
        ("level", pa.string()),  # row (failing rows quarantined) | batch (failure aborts the commit)
        ("expectation", pa.string()),  # the Great Expectations expectation type
        ("column", pa.string()),
        ("success", pa.bool_()),
        ("element_count", pa.int64()),
        ("unexpected_count", pa.int64()),
        ("observed_value", pa.string()),
        ("validated_at", TIMESTAMP),
    ]
)

CORE_TABLES: dict[str, tuple[pa.Schema, list[str]]] = {
    PAIRS: (PAIR_SCHEMA, PAIR_PARTITIONS),
    PAIR_SOURCES: (PAIR_SOURCE_SCHEMA, ["source"]),
    QUARANTINE: (QUARANTINE_SCHEMA, ["source"]),
    PROMPTS: (PROMPT_SCHEMA, ["source"]),
    RUNS: (RUN_SCHEMA, []),
    RUN_COUNTS: (RUN_COUNT_SCHEMA, []),
    VALIDATIONS: (VALIDATION_SCHEMA, []),
    RESPONSES: (RESPONSE_SCHEMA, ["iteration"]),
    SCORES: (SCORE_SCHEMA, ["iteration"]),
    MODELS: (MODEL_SCHEMA, []),
    ITERATIONS: (ITERATION_SCHEMA, []),
    TRAINING_PAIRS: (TRAINING_PAIR_SCHEMA, []),
    REFERENCE_LOGPS: (REFERENCE_LOGP_SCHEMA, []),
    DRAWN_PROMPTS: (DRAWN_PROMPT_SCHEMA, ["iteration"]),
    EVAL_PROMPTS: (EVAL_PROMPT_SCHEMA, []),
    EVAL_RESPONSES: (EVAL_RESPONSE_SCHEMA, ["iteration"]),
    EVAL_SCORES: (EVAL_SCORE_SCHEMA, ["iteration"]),
    EVALUATIONS: (EVALUATION_SCHEMA, ["iteration"]),
    TRAINING_LOGS: (TRAINING_LOG_SCHEMA, []),
}

# Columns a point lookup names (a pair, its prompt, a response, a raw row): every data file carries a Parquet
# Bloom filter of each that its table has, so DuckDB skips the row groups that cannot hold the value without
# reading the column (10M pairs as appended: a pair id in 0.30 s -> 0.06 s, tests/benchmarks/bench_sql.py).
LOOKUP_COLUMNS = ("pair_id", "prompt_id", "response_id", "_raw_key")

# The content id of each table whose rows are written once however often a run repeats (raw tables: ``_raw_key``):
# what an object-store append matches on (Lake.insert_new), so that concurrent writers cannot duplicate a row.
ROW_KEYS: dict[str, tuple[str, ...]] = {
    PAIRS: ("pair_id",), PAIR_SOURCES: ("copy_id",), QUARANTINE: ("quarantine_id",), PROMPTS: ("prompt_id", "source", "split"),
    RESPONSES: ("response_id",), SCORES: ("response_id",), DRAWN_PROMPTS: ("iteration", "prompt_id"), EVAL_PROMPTS: ("prompt_id",),
    EVAL_RESPONSES: ("response_id",), EVAL_SCORES: ("score_id",), REFERENCE_LOGPS: ("pair_id", "reference_model_id", "encoding_key"),
}

RAW_INGEST_COLUMNS = [
    ("_raw_key", pa.string()),  # "<split>#<row index>" within its file or hub split
    ("_split", pa.string()),
    ("_source_file", pa.string()),
    ("_run_id", pa.string()),
    ("_ingested_at", TIMESTAMP),
]
