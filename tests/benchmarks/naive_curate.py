"""The baseline: the same mapping done the way the reference scripts do it, one Python dict per row.

Reads every raw row with ``json.loads`` (or Parquet ``to_pylist``), maps it to standard-format pairs with
per-row Python (the same rules as the project's adapters, kept short), hashes ids with ``hashlib``, and
writes the pairs and the rejects to Parquet with ``pa.Table.from_pylist``. It writes less than the
project does (no bronze copy, no prompts or provenance tables), so the comparison flatters it.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import re
import unicodedata
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ASPECTS = ("instruction_following", "honesty", "truthfulness", "helpfulness")


def rows_of(folder: Path):
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        split = str(path.relative_to(folder)).split(".")[0]
        if path.suffix == ".parquet":
            for i, row in enumerate(pq.read_table(path).to_pylist()):
                yield f"{split}#{i}", row
        else:
            opener = gzip.open if path.name.endswith(".gz") else open
            with opener(path, "rt", encoding="utf-8") as handle:
                for i, line in enumerate(handle):
                    yield f"{split}#{i}", json.loads(line)


def norm(text: str) -> str:
    return re.sub(r"\s+", " ", unicodedata.normalize("NFC", text)).strip()


def num(value) -> float | None:
    try:
        return float(str(value).strip())
    except (TypeError, ValueError):
        return None


class Sink:
    def __init__(self, source: str, ids: bool = True):
        self.source, self.pairs, self.rejects, self.rows, self.ids = source, [], [], 0, ids

    def reject(self, key: str, rule: str) -> None:
        self.rejects.append({"source": self.source, "raw_key": key, "rule": rule})

    def pair(self, key: str, prompt: list[dict], chosen: str, rejected: str, cs: float | None = None, rs: float | None = None) -> None:
        if not prompt or any(not (m.get("content") or "").strip() for m in prompt) or not (chosen or "").strip() or not (rejected or "").strip():
            return self.reject(key, "empty_turn")
        roles = "".join({"system": "S", "user": "U", "assistant": "A"}.get(m["role"], "?") for m in prompt)
        if not re.fullmatch(r"S?U(AU)*", roles):
            return self.reject(key, "non_alternating_roles")
        if norm(chosen) == norm(rejected):
            return self.reject(key, "identical_replies")
        if cs is not None and rs is not None:
            if cs < rs:
                return self.reject(key, "label_contradicted")
            if cs == rs:
                return self.reject(key, "tie")
        prompt_id = pair_id = None
        if self.ids:
            prompt_id = hashlib.md5("\x1e".join(m["role"] + "\x1f" + norm(m["content"]) for m in prompt).encode()).hexdigest()
            pair_id = hashlib.md5(f"{prompt_id}\x1d{norm(chosen)}\x1d{norm(rejected)}".encode()).hexdigest()
        self.pairs.append({
            "pair_id": pair_id, "prompt_id": prompt_id, "prompt": prompt,
            "chosen": prompt + [{"role": "assistant", "content": chosen}],
            "rejected": prompt + [{"role": "assistant", "content": rejected}],
            "chosen_score": cs, "rejected_score": rs, "source": self.source, "raw_key": key,
        })


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def hh_turns(text: str) -> list[dict] | None:
    parts = re.split(r"\n\n(Human|Assistant): ?", text)
    if parts[0].strip() or len(parts) < 3:
        return None
    return [{"role": "user" if r == "Human" else "assistant", "content": c.strip()} for r, c in zip(parts[1::2], parts[2::2])]


def all_pairs(sink: Sink, key: str, prompt: list[dict], scored: list[tuple[str, float]]) -> None:
    for (a, sa), (b, sb) in itertools.combinations(scored, 2):
        sink.pair(key, prompt, *((a, b, sa, sb) if sa >= sb else (b, a, sb, sa)))


def curate_source(source: str, folder: Path) -> Sink:
    sink = Sink(source)
    groups: dict[str, list] = defaultdict(list)
    for key, row in rows_of(folder):
        map_row(source, sink, key, row, groups)
    for group in groups.values():
        pair_group(source, sink, group)
    return sink


def map_row(source: str, sink: Sink, key: str, row: dict, groups: dict[str, list]) -> None:
    """One raw row's pairs and rejects into ``sink`` (SHP and HelpSteer rows are grouped, paired by :func:`pair_group`)."""
    sink.rows += 1
    if source == "hh_rlhf":
        c, r = hh_turns(row["chosen"]), hh_turns(row["rejected"])
        if not c or not r or c[-1]["role"] != "assistant" or r[-1]["role"] != "assistant":
            sink.reject(key, "unparseable_transcript")
        elif c[:-1] != r[:-1]:
            sink.reject(key, "context_mismatch")
        else:
            sink.pair(key, c[:-1], c[-1]["content"], r[-1]["content"])
    elif source == "shp":
        if row["labels"] not in (0, 1):
            sink.reject(key, "bad_label")
        elif (row["score_ratio"] or 0) <= 2:
            sink.reject(key, "score_ratio")
        else:
            groups[row["post_id"]].append((key, row))
    elif source == "helpsteer":
        groups[row["prompt"]].append((key, row))
    elif source == "pku_saferlhf_30k":
        w = row["safer_response_id"]
        if w not in (0, 1) or row["better_response_id"] not in (0, 1):
            sink.reject(key, "bad_label")
        elif not row[f"is_response_{w}_safe"] and row[f"is_response_{1 - w}_safe"]:
            sink.reject(key, "label_contradicted")
        else:
            sink.pair(key, user(row["prompt"]), row[f"response_{w}"], row[f"response_{1 - w}"])
    elif source == "ultrafeedback":
        scored = []
        for comp in row["completions"]:
            ratings = [num(comp["annotations"][a]["Rating"]) for a in ASPECTS]
            if None in ratings:
                sink.reject(key, "non_numeric_rating")
            else:
                scored.append((comp["response"], sum(ratings) / len(ratings)))
        all_pairs(sink, key, user(row["instruction"]), scored)
    elif source == "ultrainteract_pair":
        prompt = [{"role": t["from"], "content": t["value"]} for t in row["trajectory"]]
        sink.pair(key, prompt, row["chosen"], row["rejected"])
    elif source == "codeultrafeedback":
        ratings = {a["model"]: num(a["rating"]) for a in row["annotations"]}
        scored = []
        for resp in row["responses"]:
            if ratings.get(resp["model"]) is None:
                sink.reject(key, "non_numeric_rating")
            else:
                scored.append((resp["response"], ratings[resp["model"]]))
        all_pairs(sink, key, user(row["instruction"]), scored)
    elif source == "distilabel_math_preference_dpo":
        sink.pair(key, user(row["instruction"]), row["chosen_response"], row["rejected_response"],
                  float(row["chosen_rating"]), float(row["rejected_rating"]))
    elif source == "distilabel_intel_orca_dpo_pairs":
        expected = row["original_rejected"] if row["status"] == "swapped" else row["original_chosen"]
        if row["status"] in ("unchanged", "swapped") and row["chosen"] != expected:
            sink.reject(key, "label_contradicted")
        elif row["status"] == "tie":
            sink.reject(key, "judge_tie")
        elif row["in_gsm8k_train"]:
            sink.reject(key, "in_gsm8k_train")
        elif row["chosen_score"] is None or row["chosen_score"] < 8:
            sink.reject(key, "min_chosen_score")
        else:
            prompt = ([{"role": "system", "content": row["system"]}] if (row["system"] or "").strip() else []) + user(row["input"])
            sink.pair(key, prompt, row["chosen"], row["rejected"])
    elif source == "distilabel_capybara_dpo_7k_binarized":
        c, r = row["chosen"], row["rejected"]
        if len(c) < 2 or len(r) < 2 or c[-1]["role"] != "assistant" or r[-1]["role"] != "assistant":
            sink.reject(key, "unparseable_conversation")
        elif c[:-1] != r[:-1]:
            sink.reject(key, "context_mismatch")
        else:
            prompt = [{"role": m["role"], "content": m["content"]} for m in c[:-1]]
            sink.pair(key, prompt, c[-1]["content"], r[-1]["content"], float(row["rating_chosen"]), float(row["rating_rejected"]))


def pair_group(source: str, sink: Sink, group: list) -> None:
    if source == "shp":
        for key, row in sorted(group, key=lambda kr: -kr[1]["score_ratio"])[:5]:
            a = row["labels"] == 1
            sink.pair(key, user(row["history"]), row["human_ref_A" if a else "human_ref_B"], row["human_ref_B" if a else "human_ref_A"],
                      float(row["score_A" if a else "score_B"]), float(row["score_B" if a else "score_A"]))
    else:  # helpsteer
        scored = [(row["response"], sum(row[x] for x in ("helpfulness", "correctness", "coherence", "complexity")) / 4) for _, row in group[:4]]
        all_pairs(sink, group[0][0], user(group[0][1]["prompt"]), scored)


def naive_curate(data_dir: Path, out: Path, sources: list[str]) -> tuple[int, int]:
    """Curate every source folder; write pairs.parquet and rejects.parquet; return (raw rows, pairs)."""
    out.mkdir(parents=True, exist_ok=True)
    pairs, rejects, rows = [], [], 0
    for source in sources:
        sink = curate_source(source, data_dir / source)
        rows += sink.rows
        pairs += sink.pairs
        rejects += sink.rejects
    seen, unique = set(), []
    for p in pairs:
        if p["pair_id"] not in seen:
            seen.add(p["pair_id"])
            unique.append(p)
    pq.write_table(pa.Table.from_pylist(unique), out / "pairs.parquet")
    pq.write_table(pa.Table.from_pylist(rejects), out / "rejects.parquet")
    return rows, len(unique)
