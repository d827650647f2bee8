"""Adapters on the real public rows in ../shared/sources (skipped, with the reason, where it is absent)."""

from __future__ import annotations

import itertools
import json
import re
import shutil
from pathlib import Path

import polars as pl
from prefhouse.pipelines.core.lake import Lake
from prefhouse.pipelines.core.sql import run_query
from prefhouse.pipelines.curate import curate


def stage(shared: Path, tmp: Path, source: str, files: dict[str, str]) -> Path:
    """Lay the shared rows out as <data dir>/<source>/<split>.jsonl (copied to a temp dir, never the repo)."""
    for name, target in files.items():
        dest = tmp / "raw" / source / target
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shared / name, dest)
    return tmp / "raw"


def row_counts(lake: Lake, source: str) -> dict[str, int]:
    t = run_query(lake, f"SELECT outcome, sum(n)::BIGINT AS n FROM run_counts WHERE source = '{source}' AND level = 'row' GROUP BY outcome")
    return dict(zip(t.column("outcome").to_pylist(), t.column("n").to_pylist()))


def transcript(messages: list[dict]) -> str:
    return "".join(f"\n\n{'Human' if m['role'] == 'user' else 'Assistant'}: {m['content']}" for m in messages)


def test_hh_rlhf_real_rows_round_trip(shared_sources: Path, tmp_path: Path, lake: Lake) -> None:
    data = stage(shared_sources, tmp_path, "hh_rlhf", {
        "hh_rlhf/harmless-base_test.first200.jsonl": "harmless-base/test.jsonl",
        "hh_rlhf/helpful-base_train.first200.from_Hypogenic-AI_llm-thankfulness-claude.jsonl": "helpful-base/train.jsonl",
    })
    curate(["hh_rlhf"], lake, data, progress=False)
    counts = row_counts(lake, "hh_rlhf")
    assert counts["in"] == 400
    assert counts["in"] == counts.get("paired", 0) + counts.get("filtered", 0) + counts.get("quarantined", 0)
    assert counts["paired"] >= 380  # the real rows are overwhelmingly well-formed
    # every pair rebuilds (up to whitespace at turn edges) into the raw transcripts it came from
    rows = pl.from_arrow(run_query(lake, """
        SELECT p.chosen, p.rejected, r.row_json FROM pair_sources c
        JOIN pairs p USING (pair_id) JOIN raw_rows r ON r.source = c.source AND list_contains(c.raw_keys, r.raw_key)
        WHERE c.is_first_copy"""))
    assert rows.height == run_query(lake, "SELECT count(*) AS n FROM pairs").column("n")[0].as_py()
    squash = lambda s: re.sub(r"\s+", " ", s).strip()  # noqa: E731
    for chosen, rejected, raw in rows.iter_rows():
        raw = json.loads(raw)
        assert squash(transcript(chosen)) == squash(raw["chosen"])
        assert squash(transcript(rejected)) == squash(raw["rejected"])
    # the dataset's "Assistant: Human:" artefact (an assistant turn that starts with the user's tag) is quarantined, never paired
    tagged = set()
    for split, name in (("harmless-base/test", "harmless-base/test.jsonl"), ("helpful-base/train", "helpful-base/train.jsonl")):
        for i, line in enumerate((data / "hh_rlhf" / name).read_text().splitlines()):
            row = json.loads(line)
            if re.search(r"\n\nAssistant:\s*Human:", row["chosen"] + row["rejected"]):
                tagged.add(f"{split}#{i}")
    assert len(tagged) >= 5
    quarantined = run_query(lake, "SELECT unnest(raw_keys) AS k, rule FROM quarantine WHERE source = 'hh_rlhf'").to_pylist()
    assert {q["k"] for q in quarantined if q["rule"] == "speaker_tag_in_turn"} == tagged - {q["k"] for q in quarantined if q["rule"] != "speaker_tag_in_turn"}


def test_helpsteer_real_rows_match_an_independent_count(shared_sources: Path, tmp_path: Path, lake: Lake) -> None:
    data = stage(shared_sources, tmp_path, "helpsteer", {"helpsteer/nvidia_HelpSteer_sample.first200.jsonl": "train.jsonl"})
    curate(["helpsteer"], lake, data, progress=False)
    rows = [json.loads(line) for line in (shared_sources / "helpsteer" / "nvidia_HelpSteer_sample.first200.jsonl").read_text().splitlines()]
    expected, ties = 0, 0
    for _, group in itertools.groupby(rows, key=lambda r: r["prompt"]):
        kept = list(group)[:4]
        score = lambda r: sum(r[a] for a in ("helpfulness", "correctness", "coherence", "complexity")) / 4  # noqa: E731
        for x, y in itertools.combinations(kept, 2):
            if x["response"].strip() and y["response"].strip() and " ".join(x["response"].split()) != " ".join(y["response"].split()):
                if score(x) == score(y):
                    ties += 1
                else:
                    expected += 1
    kept = run_query(lake, "SELECT sum(n)::BIGINT AS n FROM run_counts WHERE source='helpsteer' AND level='pair' AND outcome='kept'").column("n")[0].as_py()
    tied = run_query(lake, "SELECT count(*) AS n FROM quarantine WHERE rule = 'tie'").column("n")[0].as_py()
    assert (kept, tied) == (expected, ties)
    assert run_query(lake, "SELECT count(DISTINCT prompt_id) AS n FROM prompts").column("n")[0].as_py() <= 56
    assert row_counts(lake, "helpsteer")["in"] == 200


def test_pku_later_release_with_extra_columns(shared_sources: Path, tmp_path: Path, lake: Lake) -> None:
    """The 2024 PKU-SafeRLHF release is a superset schema: extra columns are tolerated and reported."""
    name = "pku_saferlhf_30k/related_NOT_30K/PKU-Alignment_PKU-SafeRLHF_2024-release_sample.first100.jsonl"
    data = stage(shared_sources, tmp_path, "pku_saferlhf_30k", {name: "train.jsonl"})
    run, _ = curate(["pku_saferlhf_30k"], lake, data, progress=False)
    ignored = next(iter(run.inputs["pku_saferlhf_30k"]["ignored_columns"].values()))
    assert "response_0_harm_category" in ignored and "prompt_source" in ignored
    counts = row_counts(lake, "pku_saferlhf_30k")
    assert counts["in"] == 100 == counts.get("paired", 0) + counts.get("filtered", 0) + counts.get("quarantined", 0)
    raw = [json.loads(line) for line in (shared_sources / name).read_text().splitlines()]
    pairs = pl.from_arrow(run_query(lake, """
        SELECT c.raw_keys[1] AS raw_key, p.chosen[-1].content AS chosen FROM pairs p JOIN pair_sources c USING (pair_id)"""))
    for raw_key, chosen in pairs.iter_rows():
        row = raw[int(raw_key.split("#")[1])]
        assert chosen.strip() == row[f"response_{row['safer_response_id']}"].strip()
