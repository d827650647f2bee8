"""Scale generator: expand the bundled fixtures to any number of raw rows, in each source's real schema.

    python tests/benchmarks/scale.py --rows 1000000 --out data/bench/raw

Rows are split across the ten sources in proportion to their real hub sizes. Each replica of a fixture row
gets a replica marker in its prompt (so prompts, pairs and ids are distinct, as in real data, while every
rule still fires at the fixture's rates) and, with ``--pad``, filler text that brings prompts and replies to
roughly the lengths of the real data (the fixtures are short). Groups stay contiguous (HelpSteer by prompt,
SHP by post). Output layout is ``<out>/<source>/part-NNNN.(jsonl|parquet)`` as the fixtures are laid out.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from prefhouse.pipelines.sources.reading import InputReport  # noqa: E402
from prefhouse.pipelines.sources.registry import ADAPTERS  # noqa: E402

from tests.helpers import read_local  # noqa: E402

SAMPLES = REPO / "data" / "samples"
# rows on the hub (RECIPE Table 1 and the source schemas): the mixture of a scaled run
HUB_ROWS = {
    "hh_rlhf": 169_352, "shp": 385_563, "helpsteer": 37_120, "pku_saferlhf_30k": 29_863, "ultrafeedback": 63_967,
    "ultrainteract_pair": 219_522, "codeultrafeedback": 10_000, "distilabel_math_preference_dpo": 2_418,
    "distilabel_intel_orca_dpo_pairs": 12_859, "distilabel_capybara_dpo_7k_binarized": 7_563,
}
PARQUET_SOURCES = {"ultrainteract_pair", "codeultrafeedback"}
FILLER = (
    "This paragraph stands in for the body of a real answer, with enough words to give prompts and replies "
    "the lengths seen in the published preference data. "
)


def marker(k: pl.Expr) -> pl.Expr:
    return pl.lit(" [r") + k.cast(pl.String) + pl.lit("]")


def mark_first(column: str, field: str, m: pl.Expr) -> pl.Expr:
    """A message list whose first message's ``field`` carries the replica marker."""
    first = pl.col(column).list.first().struct.with_fields(pl.field(field) + m)
    return pl.concat_list([first, pl.col(column).list.slice(1)]).alias(column)


def vary(source: str, df: pl.DataFrame, k: pl.Expr, pad: int) -> pl.DataFrame:
    """One replica of the fixture rows: distinct prompts (marker k); filler after non-empty prompts and replies."""
    filler = " " + FILLER * pad if pad else ""
    m = marker(k)
    s = pl.col

    def fill(expr: pl.Expr) -> pl.Expr:  # empty stays empty, so the empty-turn rules still fire
        return pl.when(expr.str.strip_chars() != "").then(expr + pl.lit(filler)).otherwise(expr) if pad else expr

    def fill_in(column: str, field: str) -> pl.Expr:  # the same inside a list of structs
        return s(column).list.eval(pl.element().struct.with_fields(fill(pl.field(field))))

    if source == "hh_rlhf":  # mark the first human turn; pad the final replies (the transcripts' ends)
        return df.with_columns(fill(pl.lit("\n\nHuman:") + m + s(c).str.strip_prefix("\n\nHuman:")).alias(c) for c in ("chosen", "rejected"))
    if source == "shp":
        return df.with_columns(fill(s("history") + m), s("post_id") + m, fill(s("human_ref_A")), fill(s("human_ref_B")))
    if source == "helpsteer":
        return df.with_columns(fill(s("prompt") + m), fill(s("response")))
    if source == "pku_saferlhf_30k":
        return df.with_columns(s("prompt") + m, fill(s("response_0")), fill(s("response_1")))
    if source == "ultrafeedback":
        return df.with_columns(fill(s("instruction") + m), fill_in("completions", "response"))
    if source == "ultrainteract_pair":
        return df.with_columns(mark_first("trajectory", "value", m), fill(s("chosen")), fill(s("rejected")), s("id") + m)
    if source == "codeultrafeedback":
        return df.with_columns(s("instruction") + m, fill_in("responses", "response"))
    if source == "distilabel_math_preference_dpo":
        return df.with_columns(s("instruction") + m, fill(s("chosen_response")), fill(s("rejected_response")))
    if source == "distilabel_intel_orca_dpo_pairs":
        replies = ("chosen", "rejected", "original_chosen", "original_rejected")
        return df.with_columns(s("input") + m, *[fill(s(c)) for c in replies])
    if source == "distilabel_capybara_dpo_7k_binarized":
        return df.with_columns(mark_first("chosen", "content", m), mark_first("rejected", "content", m)).with_columns(
            fill_in("chosen", "content"), fill_in("rejected", "content"))
    raise KeyError(source)


def fixture(source: str) -> pl.DataFrame:
    adapter = ADAPTERS[source]
    tables = [b.table for b in read_local(source, SAMPLES / source, adapter.raw_schema, InputReport())]
    return pl.from_arrow(pa.concat_tables(tables))


def generate(rows: int, out: Path, pad: int = 3, rows_per_file: int = 200_000, per_source: dict[str, int] | None = None) -> dict[str, int]:
    """Write about ``rows`` raw rows across the ten sources (or ``per_source`` rows of the sources it names); return rows written per source."""
    total = sum(HUB_ROWS.values())
    written = {}
    for source, hub_rows in (per_source or HUB_ROWS).items():
        want = hub_rows if per_source else max(1, round(rows * hub_rows / total))
        base = fixture(source)
        replicas = -(-want // base.height)
        folder = out / source
        folder.mkdir(parents=True, exist_ok=True)
        n, part = 0, 0
        per_file = max(1, rows_per_file // base.height)
        for start in range(0, replicas, per_file):
            ks = pl.DataFrame({"_k": list(range(start, min(replicas, start + per_file)))})
            block = ks.join(base.with_row_index("_i"), how="cross").sort("_k", "_i")
            block = vary(source, block, pl.col("_k"), pad).drop("_k", "_i")
            block = block.head(want - n)
            table = block.to_arrow().cast(ADAPTERS[source].raw_schema)
            if source in PARQUET_SOURCES:
                pq.write_table(table, folder / f"part-{part:04d}.parquet")
            else:
                pl.from_arrow(table).write_ndjson(folder / f"part-{part:04d}.jsonl")
            n += table.num_rows
            part += 1
            if n >= want:
                break
        written[source] = n
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=REPO / "data" / "bench" / "raw")
    parser.add_argument("--pad", type=int, default=3, help="filler paragraphs added to prompts and replies (0: fixture lengths)")
    args = parser.parse_args()
    t0 = time.perf_counter()
    written = generate(args.rows, args.out, args.pad)
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"{sum(written.values()):,} raw rows ({size / 1e6:,.0f} MB) in {time.perf_counter() - t0:.1f}s under {args.out}")
    for source, n in written.items():
        print(f"  {source:40} {n:>10,}")


if __name__ == "__main__":
    main()
