"""Synthetic pairs in the lake's pair schema, built by DuckDB in chunks: input for the SQL and gate benchmarks."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa
from prefhouse.pipelines.core import schema as S
from prefhouse.pipelines.core.lake import Lake

CHUNK_SQL = """
SELECT md5('pair' || i::VARCHAR) AS pair_id,
       md5('prompt' || (i // 3)::VARCHAR) AS prompt_id,
       [{'role': 'user', 'content': 'Question number ' || (i // 3)::VARCHAR || ': how do I keep basil alive on a windowsill?'}] AS prompt,
       [{'role': 'user', 'content': 'Question number ' || (i // 3)::VARCHAR || ': how do I keep basil alive on a windowsill?'},
        {'role': 'assistant', 'content': 'Give it six hours of sun and water when the top inch of soil is dry. Answer ' || i::VARCHAR}] AS chosen,
       [{'role': 'user', 'content': 'Question number ' || (i // 3)::VARCHAR || ': how do I keep basil alive on a windowsill?'},
        {'role': 'assistant', 'content': 'I am not sure. Answer ' || i::VARCHAR}] AS rejected,
       (i % 50) / 10.0 + 1.0 AS chosen_score,
       (i % 50) / 10.0 AS rejected_score,
       1.0 AS margin,
       'synthetic' AS score_kind,
       NULL::VARCHAR AS chosen_model, NULL::VARCHAR AS rejected_model,
       CASE WHEN ? = 0 THEN 'offline' ELSE 'online' END AS origin,
       ?::INTEGER AS iteration,
       ['hh_rlhf', 'shp', 'helpsteer', 'pku_saferlhf_30k', 'ultrafeedback', 'ultrainteract_pair', 'codeultrafeedback',
        'distilabel_math_preference_dpo', 'distilabel_intel_orca_dpo_pairs', 'distilabel_capybara_dpo_7k_binarized'][(i % 10) + 1] AS source,
       'synthetic/hub' AS hub_id, NULL::VARCHAR AS hub_revision, 'train' AS split,
       ['train#' || i::VARCHAR] AS raw_keys, 'bench' AS rule, 'v0' AS rule_version,
       NULL::VARCHAR AS reward_model_id, NULL::VARCHAR AS policy_model_id, 'bench' AS run_id,
       now()::TIMESTAMPTZ AS created_at
FROM range(?, ?) t(i)
"""


def chunks(pairs: int, iterations: int, chunk: int) -> Iterator[pa.Table]:
    """``pairs`` distinct pairs, ``pairs // iterations`` per iteration (each iteration x 10 sources)."""
    con = duckdb.connect()
    per_iteration = pairs // iterations
    for it in range(iterations):
        for start in range(it * per_iteration, (it + 1) * per_iteration, chunk):
            stop = min(start + chunk, (it + 1) * per_iteration)
            yield con.sql(CHUNK_SQL, params=[it, it, start, stop]).to_arrow_table().cast(S.PAIR_SCHEMA)


def generate(lake: Lake, jsonl: Path, pairs: int, iterations: int, chunk: int) -> float:
    """Append the pairs to ``lake`` (one commit per chunk) and write the same rows as JSONL files."""
    jsonl.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    t0 = time.perf_counter()
    written = 0
    for i, table in enumerate(chunks(pairs, iterations, chunk)):
        lake.append(S.PAIRS, table, S.PAIR_PARTITIONS)
        con.register("chunk", table)
        con.execute(f"COPY chunk TO '{jsonl}/part-{i:06d}.jsonl' (FORMAT json)")
        con.unregister("chunk")
        written += table.num_rows
        print(f"\r  generated {written:,} / {pairs:,} pairs", end="", flush=True)
    print()
    return time.perf_counter() - t0
