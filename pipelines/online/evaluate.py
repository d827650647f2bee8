"""Did the policy get better? Policies answer a fixed evaluation prompt set; two judges score the answers.

* **The evaluation set** (``eval_prompts``) is drawn once, the first time it is needed, from every curated
  source, in this order of preference (a seeded hash order within each): prompts of evaluation splits, then
  prompts of sources the online draw's mixture does not use, then a held-out slice of the draw's own pool;
  never a prompt an iteration used. So it takes from the online pool only what nothing else can give, and
  the online draw never takes one of its prompts.
* **Answers** (``eval_responses``): each policy answers every evaluation prompt ``samples`` times with the
  same sampling seed per prompt (``temperature``, ``max_new_tokens``), once: an answer is keyed by the
  prompt, the policy and the sampling settings, so π0's answers serve every iteration and a re-run (or a
  resumed stage) generates only what is missing. Each answer carries its log-probability under its policy
  and under π0: their mean difference estimates KL(π ‖ π0) (unbiased at temperature 1).
* **Judges** (``eval_scores``): the proxy reward model the iterations selected pairs with, and a second
  judge DPO never optimised against (``evaluate.judge``; by default a reward model trained by the
  ``[judge]`` section, registered as ``job_kind = judge``).
* **Metrics** (``evaluations``, :mod:`prefhouse.pipelines.online.win_rates`): win, tie and
  length-controlled win rates of the new policy against the previous one and against π0 under both
  judges, mean reward, mean length and the KL estimate, each with a bootstrap interval over prompts.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import polars as pl
from prefhouse.pipelines.core import schema as S
from prefhouse.pipelines.core.ids import with_md5
from prefhouse.pipelines.core.lake import Lake
from prefhouse.pipelines.online.generate import load_engine
from prefhouse.pipelines.online.settings import EvaluateSettings
from prefhouse.pipelines.online.win_rates import head_to_head, mean_with_interval
from prefhouse.quality.guard import append_eval_responses, append_eval_scores, used_prompts, used_response_prompts

if TYPE_CHECKING:
    from prefhouse.training.scoring import SequenceLogProbs


# ---------------------------------------------------------------------------------------- evaluation set
def eval_prompt_ids(lake: Lake) -> set[str]:
    """The evaluation set's prompt ids (none before it is drawn): the online draw leaves them out."""
    if not lake.exists(S.EVAL_PROMPTS):
        return set()
    return set(lake.read(S.EVAL_PROMPTS, columns=["prompt_id"]).column("prompt_id").to_pylist())


def eval_prompt_set(lake: Lake, settings: EvaluateSettings, draw_sources: list[str], run_id: str) -> pl.DataFrame:
    """The fixed evaluation set, drawn and recorded the first time (later calls read it back unchanged).

    ``draw_sources``: the online draw's sources, whose training prompts come last (see the module's docstring).
    """
    if lake.exists(S.EVAL_PROMPTS):
        existing = pl.from_arrow(lake.read(S.EVAL_PROMPTS)).sort("eval_rank")
        if existing.height:
            if existing.height != settings.prompts:
                print(f"evaluate: the evaluation set was drawn with {existing.height} prompts and stays fixed "
                      f"(evaluate.prompts = {settings.prompts} applies to a new lake)", file=sys.stderr)
            return existing
    pool = pl.from_arrow(lake.read(S.PROMPTS, columns=["prompt_id", "source", "split", "prompt", "prompt_text"]))
    drawn_online = set(lake.read(S.DRAWN_PROMPTS, columns=["prompt_id"]).column("prompt_id").to_pylist()) if lake.exists(S.DRAWN_PROMPTS) else set()
    used = used_response_prompts(lake, -1) | used_prompts(lake, -1) | drawn_online
    is_eval = pl.col("split").fill_null("").str.contains(S.EVAL_SPLIT)
    # 0: an evaluation split's; 1: a source the online draw does not use; 2: the online draw's own training pool
    rank = pl.when(is_eval).then(0).when(~pl.col("source").is_in(draw_sources)).then(1).otherwise(2)
    candidates = (
        pool.filter(~pl.col("prompt_id").is_in(pl.Series(sorted(used), dtype=pl.String).implode()))
        .with_columns(is_eval.alias("_eval"), rank.alias("_rank"))
        .sort("prompt_id", "_rank", "source")
        .unique("prompt_id", keep="first", maintain_order=True)  # a prompt in several splits or sources: its best rank
    )
    candidates = with_md5(candidates, "_draw", pl.lit(str(settings.seed)), pl.col("prompt_id")).sort("_rank", "_draw")
    chosen = candidates.head(settings.prompts)
    if not chosen.height:
        raise ValueError("no prompt is left for an evaluation set: curate more data first")
    rows = chosen.select(
        pl.int_range(pl.len(), dtype=pl.Int32).alias("eval_rank"), "prompt_id", "source", "split",
        pl.when(pl.col("_rank") == 0).then(pl.lit("evaluation_split")).when(pl.col("_rank") == 1).then(pl.lit("other_source"))
        .otherwise(pl.lit("held_out")).alias("origin"),
        "prompt", "prompt_text", pl.lit(settings.seed, pl.Int64).alias("seed"), pl.lit(run_id).alias("run_id"),
        pl.lit(datetime.now(UTC), pl.Datetime("us", "UTC")).alias("created_at"),
    )
    lake.create(S.EVAL_PROMPTS, S.EVAL_PROMPT_SCHEMA)
    lake.append(S.EVAL_PROMPTS, rows.to_arrow().cast(S.EVAL_PROMPT_SCHEMA))
    ranks = dict(chosen.group_by("_rank").len().iter_rows())
    print(f"evaluate: drew the evaluation set, {rows.height} prompts: {ranks.get(0, 0)} of evaluation splits, {ranks.get(1, 0)} of sources "
          f"the online draw does not use, {ranks.get(2, 0)} held out of its pool", file=sys.stderr)
    return rows


# ---------------------------------------------------------------------------------------- answers and scores
def _answers(lake: Lake, key: str) -> pl.DataFrame:
    if not lake.exists(S.EVAL_RESPONSES):
        return pl.from_arrow(S.EVAL_RESPONSE_SCHEMA.empty_table())
    return pl.from_arrow(lake.read(S.EVAL_RESPONSES)).filter(pl.col("eval_key") == key)


def answer(lake: Lake, iteration: int, prompts: pl.DataFrame, policy: tuple[str, str], reference: tuple[str, str],
           settings: EvaluateSettings, engine: str, run_id: str, progress: bool = True, stop_token_ids: tuple[int, ...] = (),
           log_probs: Callable[[str], SequenceLogProbs] | None = None) -> int:
    """The policy's missing answers to ``prompts``, with their log-probabilities, appended through their gates; returns how many.

    ``stop_token_ids``: the iteration's ``generate.stop_token_ids`` (the end of a turn is the model's, not the evaluation's).
    ``log_probs``: model path -> its log-prob scorer; :func:`evaluate` passes one that loads each model once (π0 is
    both a policy and every policy's reference).
    """
    from prefhouse.training.scoring import SequenceLogProbs

    log_probs = log_probs or SequenceLogProbs
    (policy_id, policy_path), (reference_id, reference_path) = policy, reference
    done = _answers(lake, settings.key).filter(pl.col("policy_model_id") == policy_id)["prompt_id"]
    todo = prompts.filter(~pl.col("prompt_id").is_in(done.implode())).select("prompt_id", "prompt")
    if not todo.height:
        return 0
    print(f"  evaluate: {policy_id} answers {todo.height} prompts x {settings.samples}", file=sys.stderr, flush=True)
    generator = load_engine(engine, policy_path, settings.seed)
    try:
        out = generator.generate(todo, iteration, settings.sampling(stop_token_ids), policy_id, run_id, progress)
    finally:
        generator.close()
    args = (out["prompt"].to_list(), out["response"].to_list(), (out["finish_reason"] == "stop").to_list())
    logp = log_probs(policy_path).logps(*args, progress=progress)
    reference_logp = logp if policy_id == reference_id else log_probs(reference_path).logps(*args, progress=progress)
    rows = with_md5(out.drop("response_id"), "response_id", pl.col("prompt_id"), pl.col("sample_index").cast(pl.String),
                    pl.col("policy_model_id"), pl.lit(settings.key))
    rows = rows.with_columns(
        pl.lit(settings.key).alias("eval_key"), pl.Series("logp", logp, pl.Float64), pl.Series("reference_logp", reference_logp, pl.Float64),
        pl.lit(reference_id).alias("reference_model_id"),
    ).select(S.EVAL_RESPONSE_SCHEMA.names)
    append_eval_responses(lake, rows, iteration, settings.samples)
    return rows.height


def judge_answers(lake: Lake, iteration: int, policy_ids: list[str], judge: tuple[str, str, str], key: str, run_id: str,
                  progress: bool = True) -> int:
    """Rewards of ``judge`` = (role, model id, path) for the policies' answers it has not scored; returns how many."""
    from prefhouse.training.scoring import RewardScorer

    role, judge_id, judge_path = judge
    answers = _answers(lake, key).filter(pl.col("policy_model_id").is_in(policy_ids))
    scored = pl.from_arrow(lake.read(S.EVAL_SCORES, columns=["response_id", "judge_model_id"])) if lake.exists(S.EVAL_SCORES) else pl.DataFrame(
        schema={"response_id": pl.String, "judge_model_id": pl.String})
    todo = answers.filter(~pl.col("response_id").is_in(scored.filter(pl.col("judge_model_id") == judge_id)["response_id"].implode()))
    if not todo.height:
        return 0
    rewards = RewardScorer(judge_path).score(todo["prompt"].to_list(), todo["response"].to_list(), progress=progress)
    rows = with_md5(todo.select("response_id"), "score_id", pl.col("response_id"), pl.lit(judge_id)).with_columns(
        pl.lit(iteration, pl.Int32).alias("iteration"), pl.lit(judge_id).alias("judge_model_id"), pl.lit(role).alias("judge_role"),
        pl.Series("reward", rewards, pl.Float64), pl.lit(run_id).alias("run_id"), pl.lit(datetime.now(UTC), pl.Datetime("us", "UTC")).alias("created_at"),
    ).select(S.EVAL_SCORE_SCHEMA.names)
    append_eval_scores(lake, rows, iteration)
    return rows.height


# ---------------------------------------------------------------------------------------- metrics
def per_prompt(lake: Lake, key: str, judges: dict[str, str]) -> pl.DataFrame:
    """One row per (policy, prompt): mean reward under each judge role, mean characters, tokens and log-ratio to π0."""
    answers = _answers(lake, key).with_columns(pl.col("response").str.len_chars().alias("chars"),
                                               (pl.col("logp") - pl.col("reference_logp")).alias("log_ratio"))
    scores = pl.from_arrow(lake.read(S.EVAL_SCORES)) if lake.exists(S.EVAL_SCORES) else pl.from_arrow(S.EVAL_SCORE_SCHEMA.empty_table())
    for role, judge_id in judges.items():
        mine = scores.filter(pl.col("judge_model_id") == judge_id).select("response_id", pl.col("reward").alias(f"reward_{role}"))
        answers = answers.join(mine, on="response_id", how="left")
    return answers.group_by("policy_model_id", "prompt_id").agg(
        *[pl.col(f"reward_{role}").mean() for role in judges], pl.col("chars").mean(), pl.col("n_tokens").mean().alias("tokens"),
        pl.col("log_ratio").mean(),
    ).sort("policy_model_id", "prompt_id")  # a fixed order: the bootstrap's resamples, and so the intervals, repeat exactly


def evaluation_rows(lake: Lake, iteration: int, policy_id: str, opponents: dict[str, str], judges: dict[str, str],
                    settings: EvaluateSettings, run_id: str) -> pl.DataFrame:
    """The ``evaluations`` rows of ``policy_id``: head-to-head rates against each opponent under each judge, its means."""
    table = per_prompt(lake, settings.key, judges)
    mine = table.filter(pl.col("policy_model_id") == policy_id)
    rows: list[dict] = []

    def add(metric: str, estimate, opponent: str | None = None, opponent_id: str | None = None, judge: str | None = None) -> None:
        rows.append({"metric": metric, "value": estimate.value, "ci_low": estimate.ci_low, "ci_high": estimate.ci_high, "n_prompts": estimate.n,
                     "opponent": opponent, "opponent_model_id": opponent_id, "judge": judge, "judge_model_id": judges.get(judge) if judge else None})

    for role in judges:
        add("mean_reward", mean_with_interval(mine[f"reward_{role}"].to_numpy(), settings.bootstrap, settings.seed), judge=role)
        for name, opponent_id in opponents.items():
            both = mine.join(table.filter(pl.col("policy_model_id") == opponent_id), on="prompt_id", suffix="_b").sort("prompt_id")
            rates = head_to_head(both[f"reward_{role}"].to_numpy(), both[f"reward_{role}_b"].to_numpy(), both["chars"].to_numpy(),
                                 both["chars_b"].to_numpy(), settings.bootstrap, settings.seed)
            for metric, estimate in rates.items():
                add(metric, estimate, name, opponent_id, role)
    for metric, column in (("mean_chars", "chars"), ("mean_tokens", "tokens"), ("kl_to_reference", "log_ratio")):
        add(metric, mean_with_interval(mine[column].to_numpy(), settings.bootstrap, settings.seed))
    now = datetime.now(UTC)
    return pl.DataFrame(rows).with_columns(
        pl.lit(iteration, pl.Int32).alias("iteration"), pl.lit(policy_id).alias("policy_model_id"), pl.lit(settings.key).alias("eval_key"),
        pl.lit(run_id).alias("run_id"), pl.lit(now, pl.Datetime("us", "UTC")).alias("created_at"),
        pl.col("n_prompts").cast(pl.Int32),
    ).select(S.EVALUATION_SCHEMA.names)


def record_evaluations(lake: Lake, rows: pl.DataFrame) -> bool:
    """Append the rows unless the lake holds this (iteration, policy, settings) already: a re-run adds nothing."""
    lake.create(S.EVALUATIONS, S.EVALUATION_SCHEMA, ["iteration"])
    first = rows.row(0, named=True)
    held = pl.from_arrow(lake.read(S.EVALUATIONS, columns=["iteration", "policy_model_id", "eval_key"]))
    if held.filter((pl.col("iteration") == first["iteration"]) & (pl.col("policy_model_id") == first["policy_model_id"])
                   & (pl.col("eval_key") == first["eval_key"])).height:
        return False
    lake.append(S.EVALUATIONS, rows.to_arrow().cast(S.EVALUATION_SCHEMA), ["iteration"])
    return True


def evaluate(lake: Lake, iteration: int, policy: tuple[str, str], opponents: dict[str, tuple[str, str]], reference: tuple[str, str],
             judges: dict[str, tuple[str, str]], settings: EvaluateSettings, draw_sources: list[str], engine: str, run_id: str,
             progress: bool = True, stop_token_ids: tuple[int, ...] = ()) -> dict:
    """Answer, judge and compare: ``policy`` against each of ``opponents`` (name -> (id, path)) under each judge (role -> (id, path))."""
    prompts = eval_prompt_set(lake, settings, draw_sources, run_id)
    from prefhouse.training.scoring import SequenceLogProbs

    everyone = dict.fromkeys([policy, *opponents.values()])  # each policy answers once, even when two roles name it
    log_probs = functools.cache(SequenceLogProbs)  # each model loaded once for log-probs, whatever roles it plays
    answered = sum(answer(lake, iteration, prompts, p, reference, settings, engine, run_id, progress, stop_token_ids, log_probs)
                   for p in everyone)
    ids = [p[0] for p in everyone]
    judged = sum(judge_answers(lake, iteration, ids, (role, *judge), settings.key, run_id, progress) for role, judge in judges.items())
    rows = evaluation_rows(lake, iteration, policy[0], {n: o[0] for n, o in opponents.items()}, {r: j[0] for r, j in judges.items()}, settings, run_id)
    recorded = record_evaluations(lake, rows)
    print(format_evaluation(rows), file=sys.stderr)
    return {"prompts": prompts.height, "answered_now": answered, "judged_now": judged, "recorded": recorded, "eval_key": settings.key}


def format_evaluation(rows: pl.DataFrame) -> str:
    """The evaluation rows as a short text table: rates in percent with their intervals."""
    lines = []
    for r in rows.sort("judge", "opponent", "metric", nulls_last=True).iter_rows(named=True):
        percent = r["metric"].endswith("rate")
        scale = 100 if percent else 1
        what = f"{r['metric']}" + (f" vs {r['opponent']}" if r["opponent"] else "") + (f" [{r['judge']} judge]" if r["judge"] else "")
        lines.append(f"  {what:<40} {r['value'] * scale:8.2f}{'%' if percent else ''}  "
                     f"[{r['ci_low'] * scale:.2f}, {r['ci_high'] * scale:.2f}]  n={r['n_prompts']}")
    return "\n".join(lines)
