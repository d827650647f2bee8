"""The report before a DPO round: content, images, warnings vs failures, and the DPO gate."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import polars as pl
import pytest
from prefhouse.pipelines.core import schema as S
from prefhouse.pipelines.core.lake import Lake
from prefhouse.pipelines.curate import curate
from prefhouse.quality.report import (
    ReportFailed,
    ReportSettings,
    build_report,
    main,
    require_passing,
)

from .conftest import SAMPLES


def test_report_on_the_fixtures(curated_lake: Lake, tmp_path: Path) -> None:
    report = build_report(curated_lake, 0, tmp_path, ReportSettings(mixture={"hh_rlhf": 0.5}))
    assert report.status == "passed" and report.failures == []
    assert report.numbers["pairs"] == curated_lake.read(S.PAIRS).num_rows
    # warnings are separate from failures and shown at the top
    assert any("length bias" in w for w in report.warnings)
    assert any(w.startswith("source hh_rlhf is") for w in report.warnings)
    md = report.markdown_path.read_text()
    for section in ("Counts per source and iteration", "Quality gates over the snapshot", "Ties dropped",
                    "Reward of online pairs, and drift from the previous iteration under the same reward model",
                    "Offline sources' native scores", "Per-prompt reward/length correlation"):
        assert f"## {section}" in md, section
    assert md.index("**WARNING:**") < md.index("## Counts")
    assert "| 0 | ultrafeedback | 76 | 20 |" in md
    page = report.html_path.read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 2
    for data in images:
        png = base64.b64decode(data)
        assert png.startswith(b"\x89PNG") and len(png) > 5_000
    assert (report.html_path.parent / "length_correlation.png").stat().st_size > 5_000
    # ties are counted from the run log: UltraFeedback's fixture has one all-tie row (6 ties)
    assert "| ultrafeedback | 105 | 6 |" in md  # 96 kept + 6 ties + 3 with an empty reply


def test_report_fails_on_a_snapshot_that_breaks_a_gate(lake: Lake, tmp_path: Path) -> None:
    curate(["distilabel_math_preference_dpo"], lake, SAMPLES, progress=False)
    # a pair slipped in by a writer that skipped the gates: same pair id as an existing one
    lake.append(S.PAIRS, lake.read(S.PAIRS).slice(0, 1), S.PAIR_PARTITIONS)
    report = build_report(lake, 0, tmp_path)
    assert report.failed and any(f.startswith("pair_id_unique") for f in report.failures)
    assert "FAILED" in report.html_path.read_text()
    with pytest.raises(ReportFailed, match="pair_id_unique"):
        require_passing(report)
    logged = require_passing(report, override=True)
    assert logged["quality_override"] is True and logged["quality_failures"] == report.failures
    assert main(["--iter", "0", "--lake", lake.uri, "--out", str(tmp_path)]) == 1


def test_empty_snapshot_fails(curated_lake: Lake, lake: Lake, tmp_path: Path) -> None:
    """A lake full of pairs, a DPO snapshot that selects none of them: refused, naming the snapshot."""
    from prefhouse.quality.report import ReportScope

    scope = ReportScope(pair_ids=(), versions=curated_lake.versions([S.PAIRS]), snapshot_hash="abc123", selection={})
    report = build_report(curated_lake, 0, tmp_path, scope=scope)
    assert curated_lake.read(S.PAIRS).num_rows > 0
    assert report.failed and report.failures[-1] == "no pairs in the DPO snapshot abc123"
    assert build_report(lake, 3, tmp_path).failures[-1] == "no pairs with iteration <= 3 in the lake"  # and an empty lake


def test_report_describes_exactly_the_dpo_snapshot(curated_lake: Lake, tmp_path: Path) -> None:
    from prefhouse.quality.report import ReportScope
    from prefhouse.training.snapshot import Selection, resolve

    snapshot = resolve(curated_lake, Selection(mixture="mix1", size_matched=5, eval_fraction=0.2))
    report = build_report(curated_lake, 0, tmp_path, scope=ReportScope.of(snapshot))
    assert report.numbers["pairs"] == snapshot.train.num_rows + snapshot.eval.num_rows < curated_lake.read(S.PAIRS).num_rows
    assert report.snapshot_hash == snapshot.snapshot_hash and snapshot.snapshot_hash in report.markdown_path.read_text()
    counted = set(re.findall(r"^\| 0 \| ([a-z][a-z_0-9]*) \| \d+ \| \d+ \|$", report.markdown_path.read_text(), re.M))
    assert counted == {"hh_rlhf", "shp", "ultrafeedback"}  # the mixture's sources only


def test_rewards_are_compared_only_under_one_reward_model() -> None:
    from prefhouse.quality.report import reward_tables

    rows = [  # offline native ratings (mean 7.3) and online rewards from two reward models
        (0, "ultrafeedback", "fine_grained", None, 8.0, 6.6), (1, "online", "reward_model", "rm-a", -0.5, -1.0),
        (2, "online", "reward_model", "rm-a", -0.2, -0.9), (3, "online", "reward_model", "rm-b", 3.0, 1.0),
    ]
    values = pl.DataFrame(rows, schema=["iteration", "source", "score_kind", "reward_model_id", "chosen_score", "rejected_score"], orient="row")
    values = values.with_columns((pl.col("chosen_score") - pl.col("rejected_score")).alias("margin"))
    drift, native = reward_tables(values)
    assert drift["iteration"].to_list() == [1, 2, 3] and 0 not in drift["iteration"].to_list()
    assert drift["chosen_drift"].to_list()[1] == pytest.approx(0.3)  # rm-a: iteration 2 against iteration 1
    assert drift["chosen_drift"].to_list()[0] is None and drift["chosen_drift"].to_list()[2] is None  # nothing before it under rm-b
    assert native.to_dicts() == [{"source": "ultrafeedback", "score_kind": "fine_grained", "pairs": 1, "chosen": 8.0, "rejected": 6.6,
                                  "margin": pytest.approx(1.4)}]


def test_report_lists_earlier_refused_appends(lake: Lake, tmp_path: Path) -> None:
    """An append the gates refused landed nothing, but the report before the next DPO round says it happened."""
    from prefhouse.quality.gates import GateError
    from prefhouse.quality.guard import append_pairs

    curate(["distilabel_math_preference_dpo"], lake, SAMPLES, progress=False)
    online = pl.from_arrow(lake.read(S.PAIRS)).head(2).with_columns(
        pl.lit(1, pl.Int32).alias("iteration"), pl.lit("online").alias("origin"), pl.lit("online").alias("source"))
    with pytest.raises(GateError):
        append_pairs(lake, pl.concat([online, online.head(1)]), iteration=1)  # a duplicated pair: refused whole
    md = build_report(lake, 1, tmp_path).markdown_path.read_text()
    section = md.split("## Gate failures in earlier appends (their rows never landed)", 1)[1].split("\n## ", 1)[0]
    assert "| pairs | pair_id_unique | 1 |" in section
