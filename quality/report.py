"""The data-quality report a user reads before every DPO round: ``python -m quality.report --iter N``.

It describes the snapshot DPO of iteration N will read (given as a :class:`ReportScope`: the snapshot's pairs
at its pinned versions; without one, every pair with ``iteration <= N``), re-runs the pairs suite over that whole snapshot (what
was valid batch by batch can still collide across batches: a pair id twice, a prompt in two
iterations), and shows counts per source and iteration, gate results, distributions of rewards, margins
and lengths of chosen vs rejected, the share of ties dropped, rewards of online pairs with their drift
under one reward model (offline native scores apart, on their own scales),
and the paper's Figure 5 statistic: the per-prompt Pearson correlation of reward and response length,
as a heatmap over prompts grouped by mean response length. Failures (a gate failing over the snapshot)
make the report fail, and DPO refuses a failed report unless overridden; warnings (a high reward/length
correlation, a source's share drifting from the intended mixture) are listed at the top.
"""

from __future__ import annotations

if __name__ == "__main__":  # run as a script: the process is set up and a --help answered here, before the imports below load polars, DuckDB, torch…
    from prefhouse.pipelines.core.process import start
    from prefhouse.quality.settings import report_parser

    start(report_parser)

import base64
import html
import io
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pyarrow as pa
from prefhouse.pipelines.core import schema as S
from prefhouse.pipelines.core.errors import Refused
from prefhouse.pipelines.core.lake import Lake
from prefhouse.pipelines.core.names import DEFAULT_REPORTS as DEFAULT_OUT
from prefhouse.pipelines.core.sql import connect
from prefhouse.quality.checks import pair_facts
from prefhouse.quality.gates import judge
from prefhouse.quality.settings import ReportSettings
from prefhouse.quality.settings import report_parser as build_parser
from prefhouse.quality.suites import GateContext


@dataclass(frozen=True)
class ReportScope:
    """The exact pairs a DPO round reads: its snapshot's pair ids at pinned versions (resolved by the training layer)."""

    pair_ids: tuple[str, ...]
    versions: dict[str, int]
    snapshot_hash: str
    selection: dict

    @classmethod
    def of(cls, snapshot) -> ReportScope:
        """The scope of a ``training.snapshot.Snapshot`` (train and held-out pairs)."""
        ids = tuple(snapshot.train.column("pair_id").to_pylist() + snapshot.eval.column("pair_id").to_pylist())
        return cls(ids, dict(snapshot.versions), snapshot.snapshot_hash, asdict(snapshot.selection))


@dataclass
class Report:
    iteration: int
    versions: dict[str, int]
    status: str  # passed | failed
    failures: list[str]
    warnings: list[str]
    html_path: Path
    markdown_path: Path
    numbers: dict = field(default_factory=dict)
    snapshot_hash: str | None = None  # the DPO snapshot it describes; None: every pair with iteration <= N

    @property
    def failed(self) -> bool:
        return self.status == "failed"


class ReportFailed(Refused):
    """DPO was asked to train on a snapshot whose quality report failed."""

    def __init__(self, report: Report):
        lines = "\n".join(f"  - {f}" for f in report.failures)
        super().__init__(
            f"the quality report for iteration {report.iteration} failed ({report.html_path}):\n{lines}\n"
            "fix the data, or pass the override flag to train anyway (its use is recorded in the run log)"
        )
        self.report = report


def require_passing(report: Report, override: bool = False) -> dict:
    """Raise :class:`ReportFailed` for a failed report unless ``override``; return what to log with the run."""
    if report.failed and not override:
        raise ReportFailed(report)
    return {"quality_report": str(report.html_path), "quality_status": report.status,
            "quality_override": bool(override and report.failed), "quality_failures": report.failures}


# ------------------------------------------------------------------------------------------------ data
def _snapshot_facts(lake: Lake, versions: dict[str, int], iteration: int, scoped: pa.Table | None = None) -> pl.DataFrame:
    """Facts of every pair in the snapshot (``scoped``: its pairs, already read), computed batch by batch (bounded memory)."""
    import pyarrow.dataset as pads

    frames = []
    if scoped is not None or versions.get(S.PAIRS) is not None:
        batches = scoped.to_batches() if scoped is not None else \
            lake.dataset(S.PAIRS, versions[S.PAIRS]).to_batches(filter=pads.field("iteration") <= iteration)
        frames = [pair_facts(pl.from_arrow(b)) for b in batches if b.num_rows]
    if not frames:
        return pair_facts(pl.from_arrow(S.PAIR_SCHEMA.empty_table()))
    facts = pl.concat(frames)
    online_iterations = facts.filter(pl.col("iteration") > 0).group_by("prompt_id").agg(pl.col("iteration").n_unique().alias("_k"))
    return facts.join(online_iterations, on="prompt_id", how="left").with_columns(
        ((pl.col("iteration") > 0) & (pl.col("_k").fill_null(1) > 1)).alias("prompt_reused")
    ).drop("_k")


def response_rewards(con, iteration: int) -> pl.DataFrame:
    """Per response: prompt, iteration, source, length (characters) and reward.

    A response is a distinct (prompt, reply text). Online prompts read their n scored samples from
    ``responses`` and ``scores`` (the paper's Figure 5 statistic); other prompts read both sides of their
    pairs (UltraFeedback, HelpSteer, CodeUltraFeedback offline have several scored responses per prompt).
    """
    sql = f"""
        WITH scored AS (
            SELECT r.prompt_id, r.iteration, 'online' AS source, r.response AS reply, s.reward
            FROM responses r JOIN scores s USING (response_id) WHERE r.iteration BETWEEN 1 AND {iteration})
        SELECT DISTINCT prompt_id, iteration, source, reply, length(reply) AS chars, reward FROM (
            SELECT * FROM scored
            UNION ALL
            SELECT prompt_id, iteration, source, chosen[-1].content AS reply, chosen_score AS reward FROM pairs
            WHERE iteration <= {iteration} AND chosen_score IS NOT NULL AND prompt_id NOT IN (SELECT prompt_id FROM scored)
            UNION ALL
            SELECT prompt_id, iteration, source, rejected[-1].content, rejected_score FROM pairs
            WHERE iteration <= {iteration} AND rejected_score IS NOT NULL AND prompt_id NOT IN (SELECT prompt_id FROM scored))"""
    return pl.from_arrow(con.sql(sql).to_arrow_table()).drop("reply")


def cut_responses(con, iteration: int) -> pl.DataFrame:
    """Per online iteration: responses cut at max_new_tokens, and scores whose sequence was fitted to score.max_length."""
    return pl.from_arrow(con.sql(f"""
        SELECT r.iteration, count(*) AS responses,
               count(*) FILTER (r.finish_reason = 'length') AS cut_at_max_new_tokens,
               count(*) FILTER (s.truncation = 'prompt') AS scored_with_prompt_cut,
               count(*) FILTER (s.truncation = 'response') AS scored_on_response_start
        FROM responses r LEFT JOIN scores s USING (response_id)
        WHERE r.iteration BETWEEN 1 AND {iteration} GROUP BY ALL ORDER BY ALL""").to_arrow_table())


def length_correlations(responses: pl.DataFrame, min_responses: int) -> pl.DataFrame:
    """Per prompt: Pearson r of reward and length over its responses, and the mean response length."""
    return (
        responses.group_by("prompt_id", "iteration", "source")
        .agg(pl.len().alias("n"), pl.corr("reward", "chars").alias("r"), pl.col("chars").mean().alias("mean_chars"))
        .filter((pl.col("n") >= min_responses) & pl.col("r").is_not_nan() & pl.col("r").is_not_null())
    )


def tie_shares(con) -> pl.DataFrame:
    """Per source: candidate pairs and ties dropped, from each source's latest successful run."""
    sql = """
        WITH latest AS (
            SELECT c.source, c.run_id FROM run_counts c JOIN runs r USING (run_id)
            WHERE r.status = 'succeeded' AND c.level = 'pair'
            QUALIFY row_number() OVER (PARTITION BY c.source ORDER BY r.started_at DESC) = 1)
        SELECT c.source,
               sum(n) FILTER (outcome IN ('kept', 'filtered', 'quarantined'))::BIGINT AS candidates,
               coalesce(sum(n) FILTER (outcome = 'filtered' AND rule = 'tie'), 0)::BIGINT AS ties
        FROM run_counts c JOIN latest USING (source, run_id) WHERE c.level = 'pair'
        GROUP BY c.source ORDER BY c.source"""
    return pl.from_arrow(con.sql(sql).to_arrow_table()).with_columns((pl.col("ties") / pl.col("candidates")).alias("tie_share"))


# ------------------------------------------------------------------------------------------------ plots
def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend, imported when a plot is first drawn (seconds of start-up otherwise)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    _pyplot().close(fig)
    return buf.getvalue()


def distribution_plots(values: pl.DataFrame) -> bytes:
    """Histograms per iteration: rewards, margins and lengths of chosen vs rejected."""
    plt = _pyplot()

    iterations = sorted(values["iteration"].unique().to_list())
    panels = [("reward", "chosen_score", "rejected_score"), ("margin", "margin", None), ("length (chars)", "chosen_chars", "rejected_chars")]
    fig, axes = plt.subplots(len(iterations), 3, figsize=(12, 2.8 * len(iterations)), squeeze=False)
    for row, it in enumerate(iterations):
        part = values.filter(pl.col("iteration") == it)
        for col, (title, a, b) in enumerate(panels):
            ax = axes[row][col]
            for name, label in ((a, "chosen" if b else title), (b, "rejected")):
                if name is None:
                    continue
                data = part[name].drop_nulls().drop_nans() if part[name].dtype.is_float() else part[name].drop_nulls()
                if data.len():
                    ax.hist(data.to_numpy(), bins=40, alpha=0.6, label=label)
            ax.set_title(f"iteration {it}: {title}", fontsize=9)
            ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def evaluations_so_far(lake: Lake, iteration: int) -> pl.DataFrame:
    """The evaluate stage's metrics of iterations 1..N-1 (the policies DPO round N builds on), one row per number."""
    if not lake.exists(S.EVALUATIONS):
        return pl.DataFrame()
    rows = pl.from_arrow(lake.read(S.EVALUATIONS)).filter(pl.col("iteration").is_between(1, iteration - 1))
    return rows.select("iteration", "metric", "opponent", "judge", "value", "ci_low", "ci_high", "n_prompts").sort(
        "iteration", "metric", "opponent", "judge", nulls_last=True)


def so_far_plot(rows: pl.DataFrame) -> bytes | None:
    """Win rates, rewards, length and KL across iterations, each with its bootstrap interval."""
    if not rows.height:
        return None
    plt = _pyplot()

    panels = [("win rate (%)", ["win_rate", "lc_win_rate"]), ("mean reward", ["mean_reward"]), ("mean length (chars)", ["mean_chars"]),
              ("KL to reference (nats)", ["kl_to_reference"])]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
    for ax, (title, metrics) in zip(axes[0], panels, strict=True):
        part = rows.filter(pl.col("metric").is_in(metrics))
        for key, line in part.group_by("metric", "opponent", "judge", maintain_order=True):
            line = line.sort("iteration")
            scale = 100 if title.startswith("win") else 1
            x, y = line["iteration"].to_numpy(), line["value"].to_numpy() * scale
            err = [y - line["ci_low"].to_numpy() * scale, line["ci_high"].to_numpy() * scale - y]
            label = " ".join(str(k) for k in key if k)
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=label)
        if title.startswith("win"):
            ax.axhline(50, color="grey", lw=0.8, ls="--")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("iteration")
        ax.set_xticks(sorted(rows["iteration"].unique().to_list()))
        ax.legend(fontsize=6)
    fig.tight_layout()
    return _png(fig)


def training_curves(lake: Lake) -> bytes | None:
    """The loss of every reward-model, judge and DPO run the lake registered, by step."""
    if not lake.exists(S.TRAINING_LOGS):
        return None
    logs = pl.from_arrow(lake.read(S.TRAINING_LOGS)).filter(pl.col("metric") == "loss")
    if not logs.height:
        return None
    plt = _pyplot()

    kinds = sorted(logs["job_kind"].unique().to_list())
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.5 * len(kinds), 3), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        for (model_id,), run in logs.filter(pl.col("job_kind") == kind).group_by("model_id", maintain_order=True):
            run = run.sort("step")
            ax.plot(run["step"].to_numpy(), run["value"].to_numpy(), marker=".", label=model_id)
        ax.set_title(f"{kind}: training loss", fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=6)
    fig.tight_layout()
    return _png(fig)


def correlation_heatmap(corr: pl.DataFrame) -> bytes:
    """Figure 5 of the paper: mean per-prompt reward/length correlation by group and mean-length decile."""
    plt = _pyplot()
    import numpy as np

    fig, ax = plt.subplots(figsize=(10, 3.5))
    if corr.height == 0:
        ax.text(0.5, 0.5, "no prompt has enough scored responses", ha="center", va="center")
        ax.axis("off")
        return _png(fig)
    groups = corr.with_columns(
        pl.when(pl.col("iteration") == 0).then(pl.lit("offline: ") + pl.col("source")).otherwise(pl.format("iteration {}", pl.col("iteration"))).alias("group"),
        (pl.col("mean_chars").rank("ordinal") * 10 / (pl.len() + 1)).floor().cast(pl.Int32).clip(0, 9).alias("decile"),
    )
    cells = groups.group_by("group", "decile").agg(pl.col("r").mean().alias("r"))
    names = sorted(cells["group"].unique().to_list())
    grid = np.full((len(names), 10), np.nan)
    for g, d, r in cells.iter_rows():
        grid[names.index(g), d] = r
    image = ax.imshow(grid, cmap="coolwarm", vmin=-1, vmax=1, aspect="auto")
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xticks(range(10), [f"D{i + 1}" for i in range(10)], fontsize=8)
    ax.set_xlabel("prompts grouped by mean response length (deciles, short to long)")
    ax.set_title("per-prompt Pearson correlation of reward and response length", fontsize=10)
    fig.colorbar(image, ax=ax)
    return _png(fig)


# ------------------------------------------------------------------------------------------------ build
def build_report(lake: Lake, iteration: int, out_dir: Path = DEFAULT_OUT, settings: ReportSettings = ReportSettings(),
                 scope: ReportScope | None = None) -> Report:
    """Compute, render (HTML + Markdown) and return the report for DPO of ``iteration``.

    ``scope``: the snapshot DPO will read (its selection's pairs at its pinned versions); without one, every
    pair with ``iteration <= N`` at the latest versions.
    """
    import pyarrow.dataset as pads

    con, versions = connect(lake, as_of=",".join(f"{t}={v}" for t, v in sorted(scope.versions.items())) if scope else None, direct=True)
    scoped = None
    if scope is not None:  # every query below, and the gates, read the snapshot's pairs only: read once
        scoped = lake.read(S.PAIRS, scope.versions.get(S.PAIRS), filter=pads.field("pair_id").isin(pa.array(scope.pair_ids, pa.string())))
        con.register(S.PAIRS, scoped)
    try:
        counts = pl.from_arrow(con.sql(
            f"SELECT iteration, source, count(*) AS pairs, count(DISTINCT prompt_id) AS prompts FROM pairs "
            f"WHERE iteration <= {iteration} GROUP BY ALL ORDER BY iteration, source").to_arrow_table())
        values = pl.from_arrow(con.sql(
            f"SELECT iteration, source, score_kind, reward_model_id, chosen_score, rejected_score, margin, chosen_chars, rejected_chars "
            f"FROM pair_texts WHERE iteration <= {iteration}").to_arrow_table())
        corr = length_correlations(response_rewards(con, iteration), settings.min_responses_for_correlation)
        ties = tie_shares(con)
        cuts = cut_responses(con, iteration)
        past_failures = pl.from_arrow(con.sql(
            "SELECT table_name, gate, count(*) AS runs FROM validations WHERE NOT success GROUP BY ALL ORDER BY ALL").to_arrow_table())
    finally:
        con.close()

    facts = _snapshot_facts(lake, versions, iteration, scoped)
    sources = tuple(sorted({*S.OFFLINE_SOURCES, S.ONLINE_SOURCE}))
    verdict = judge(S.PAIRS, "pairs", facts.with_row_index("_row"), GateContext(tuple(range(iteration + 1)), sources, settings.bounds), "report")
    failures = [f"{g['gate']}: {g['unexpected_count'] or 0} of {g['element_count']} rows ({g['observed_value']})" for g in verdict.results if not g["success"]]
    if counts.height == 0:
        failures.append(f"no pairs in the DPO snapshot {scope.snapshot_hash}" if scope else f"no pairs with iteration <= {iteration} in the lake")

    warnings = []
    mean_r = corr["r"].mean() if corr.height else None
    if mean_r is not None and mean_r > settings.max_mean_length_correlation:
        warnings.append(f"mean per-prompt reward/length correlation {mean_r:.3f} > {settings.max_mean_length_correlation} (length bias)")
    shares = counts.group_by("source").agg(pl.col("pairs").sum()).with_columns((pl.col("pairs") / pl.col("pairs").sum()).alias("share"))
    if settings.mixture:
        actual = dict(shares.select("source", "share").iter_rows())
        for source, target in settings.mixture.items():
            if abs(actual.get(source, 0.0) - target) > settings.share_tolerance:
                warnings.append(f"source {source} is {actual.get(source, 0.0):.1%} of the snapshot, the mixture says {target:.1%}")
    drift, native = reward_tables(values)

    status = "failed" if failures else "passed"
    out = out_dir / f"iteration-{iteration}"
    out.mkdir(parents=True, exist_ok=True)
    so_far = evaluations_so_far(lake, iteration)
    images = {"distributions.png": distribution_plots(values) if values.height else None, "length_correlation.png": correlation_heatmap(corr),
              "so_far.png": so_far_plot(so_far), "training_curves.png": training_curves(lake)}
    for name, data in images.items():
        if data:
            (out / name).write_bytes(data)
    numbers = {
        "pairs": int(counts["pairs"].sum()) if counts.height else 0,
        "mean_length_correlation": mean_r, "prompts_with_correlation": corr.height,
        "ties_dropped": int(ties["ties"].sum()) if ties.height else 0,
        "candidates": int(ties["candidates"].sum()) if ties.height else 0,
        "responses_cut_at_max_new_tokens": int(cuts["cut_at_max_new_tokens"].sum()) if cuts.height else 0,
        "scores_on_response_start": int(cuts["scored_on_response_start"].sum()) if cuts.height else 0,
    }
    report = Report(iteration, versions, status, failures, warnings, out / "report.html", out / "report.md", numbers,
                    scope.snapshot_hash if scope else None)
    sections = _sections(report, counts, verdict.results, past_failures, ties, drift, native, corr, shares, so_far, cuts)
    report.html_path.write_text(_html(report, sections, images))
    report.markdown_path.write_text(_markdown(report, sections, images))
    (out / "report.json").write_text(json.dumps({**asdict(report), "html_path": str(report.html_path), "markdown_path": str(report.markdown_path)}, default=str, indent=2))
    return report


def reward_tables(values: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rewards of online pairs per (reward model, iteration), drift only between iterations of one reward model;
    the offline sources' native scores apart, per source and kind (a rating scale is not a reward scale)."""
    online = values.filter(pl.col("iteration") > 0)
    drift = (
        online.group_by("reward_model_id", "iteration").agg(pl.col("chosen_score").mean().alias("chosen"), pl.col("rejected_score").mean().alias("rejected"))
        .sort("reward_model_id", "iteration")
        .with_columns((pl.col("chosen") - pl.col("chosen").shift(1).over("reward_model_id")).alias("chosen_drift"),
                      (pl.col("rejected") - pl.col("rejected").shift(1).over("reward_model_id")).alias("rejected_drift"))
    )
    native = (
        values.filter((pl.col("iteration") == 0) & pl.col("chosen_score").is_not_null())
        .group_by("source", "score_kind").agg(pl.len().alias("pairs"), pl.col("chosen_score").mean().alias("chosen"),
                                              pl.col("rejected_score").mean().alias("rejected"), pl.col("margin").mean().alias("margin"))
        .sort("source")
    )
    return drift, native


def _sections(report, counts, gate_results, past_failures, ties, drift, native, corr, shares, so_far, cuts) -> list[tuple[str, pl.DataFrame | str]]:
    gates = pl.DataFrame([{k: r[k] for k in ("gate", "level", "success", "element_count", "unexpected_count", "observed_value")} for r in gate_results])
    corr_summary = (
        corr.group_by("iteration", "source").agg(pl.len().alias("prompts"), pl.col("r").mean().round(4).alias("mean_r"), pl.col("r").median().round(4).alias("median_r"))
        .sort("iteration", "source") if corr.height else "no prompt with enough scored responses"
    )
    return [
        ("Counts per source and iteration", counts),
        ("Share of each source", shares.sort("source")),
        ("Quality gates over the snapshot", gates),
        ("Gate failures in earlier appends (their rows never landed)", past_failures if past_failures.height else "none"),
        ("Ties dropped (latest run per source)", ties),
        ("Online responses cut short: at generate.max_new_tokens (paired only if generate.keep_truncated), and fitted to "
         "score.max_length (prompt cut from the left, or the response scored on its start)", cuts if cuts.height else "no online responses"),
        ("Reward of online pairs, and drift from the previous iteration under the same reward model", drift if drift.height else "no online pairs"),
        ("Offline sources' native scores (their own scales; not comparable with rewards)", native if native.height else "none"),
        ("Per-prompt reward/length correlation (paper Figure 5)", corr_summary),
        ("So far: the policies of iterations 1..N-1 on the evaluation set (bootstrap 95% intervals; so_far.png)",
         so_far if so_far.height else "no evaluated iteration yet"),
    ]


def _table_md(df: pl.DataFrame | str) -> str:
    if isinstance(df, str):
        return df
    cols = df.columns
    rows = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    rows += ["| " + " | ".join("" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v)) for v in r) + " |" for r in df.iter_rows()]
    return "\n".join(rows)


def _table_html(df: pl.DataFrame | str) -> str:
    if isinstance(df, str):
        return f"<p>{html.escape(df)}</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in df.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape('' if v is None else (f'{v:.4g}' if isinstance(v, float) else str(v)))}</td>" for v in r) + "</tr>"
        for r in df.iter_rows()
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _header_lines(report: Report) -> list[str]:
    return [
        (f"Snapshot: DPO round {report.iteration}'s, hash {report.snapshot_hash}" if report.snapshot_hash else
         f"Snapshot: every pair with iteration <= {report.iteration}") + f"; table versions {json.dumps(report.versions, sort_keys=True)}.",
        f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC. Pairs: {report.numbers['pairs']}; mean per-prompt reward/length "
        f"correlation: {report.numbers['mean_length_correlation'] if report.numbers['mean_length_correlation'] is not None else 'n/a'} "
        f"over {report.numbers['prompts_with_correlation']} prompts.",
    ]


def _markdown(report: Report, sections, images) -> str:
    lines = [f"# Data-quality report before DPO, iteration {report.iteration}: {report.status.upper()}", ""]
    lines += [f"**FAILED:** {f}" for f in report.failures] + [f"**WARNING:** {w}" for w in report.warnings]
    lines += ["", *_header_lines(report), ""]
    for title, table in sections:
        lines += [f"## {title}", "", _table_md(table), ""]
    lines += [f"![{name}]({name})" for name, data in images.items() if data]
    return "\n".join(lines) + "\n"


def _html(report: Report, sections, images) -> str:
    color = "#b00020" if report.failed else "#1b5e20"
    alerts = "".join(f'<p class="fail">FAILED: {html.escape(f)}</p>' for f in report.failures)
    alerts += "".join(f'<p class="warn">WARNING: {html.escape(w)}</p>' for w in report.warnings)
    body = "".join(f"<h2>{html.escape(t)}</h2>{_table_html(d)}" for t, d in sections)
    pictures = "".join(
        f'<h2>{html.escape(n)}</h2><img alt="{n}" src="data:image/png;base64,{base64.b64encode(d).decode()}">' for n, d in images.items() if d
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>prefhouse quality report, iteration {report.iteration}</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:auto}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 6px}}.fail{{color:#b00020;font-weight:bold}}.warn{{color:#8a6d00;font-weight:bold}}
img{{max-width:100%}}</style></head><body>
<h1 style="color:{color}">Data-quality report before DPO, iteration {report.iteration}: {report.status.upper()}</h1>
{alerts}{"".join(f"<p>{html.escape(x)}</p>" for x in _header_lines(report))}{body}{pictures}</body></html>"""


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    mixture = {k: float(v) for k, v in (p.split("=") for p in args.mixture.split(","))} if args.mixture else None
    settings = ReportSettings(max_mean_length_correlation=args.max_length_correlation, mixture=mixture, share_tolerance=args.share_tolerance)
    report = build_report(Lake(args.lake), args.iteration, args.out, settings)
    print(f"quality report for iteration {report.iteration}: {report.status.upper()}")
    for line in [f"FAILED: {f}" for f in report.failures] + [f"WARNING: {w}" for w in report.warnings]:
        print(f"  {line}")
    print(f"  {report.html_path}\n  {report.markdown_path}")
    return 1 if report.failed else 0


if __name__ == "__main__":
    from prefhouse.pipelines.core.errors import run
    from prefhouse.pipelines.core.process import finish

    finish(run(main))
