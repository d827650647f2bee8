"""Regenerate the bundled raw fixtures: ``python data/samples/make_samples.py``.

Each source folder holds rows written in that source's exact raw hub schema (column names, nesting and
types; strings where the hub has strings), laid out as on the hub (JSON lines, ``.json`` JSON lines, gzip,
Parquet). Besides ordinary rows, every source has rows that exercise each rule of its adapter and the
shared rules; ``tests/test_curate_samples.py`` states what each file must produce. The text is invented
for these fixtures. The output is deterministic: re-running rewrites identical files.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent

TOPICS = [
    ("How do I keep basil alive on a windowsill?", "Give it six hours of sun, water when the top inch of soil is dry, and pinch off flower buds."),
    ("What is a good first programming language?", "Python is a common first choice: readable syntax, a large standard library and many tutorials."),
    ("Why is the sky blue?", "Air molecules scatter short blue wavelengths of sunlight more than long red ones (Rayleigh scattering)."),
    ("How long should I boil an egg for a soft yolk?", "About six minutes from boiling water, then move it to cold water to stop the cooking."),
    ("Can you explain compound interest?", "Interest is added to the principal, so each period earns interest on the previous interest too."),
    ("What should I pack for a two-day hike?", "Water, layers, a map, a headlamp, food, a first-aid kit and a shelter suited to the weather."),
    ("How do vaccines train the immune system?", "They present a harmless piece or version of a pathogen so the body makes memory cells in advance."),
    ("Is it safe to charge my phone overnight?", "Modern phones stop charging at full battery, so overnight charging is generally safe."),
    ("How can I improve my sleep?", "Keep a regular schedule, limit screens and caffeine late in the day, and keep the bedroom cool and dark."),
    ("What causes tides?", "Mainly the Moon's gravity pulling on the oceans, with a smaller contribution from the Sun."),
    ("How do I write a cover letter?", "Address the hiring manager, connect two or three achievements to the job, and close with a clear ask."),
    ("What is the difference between a list and a tuple in Python?", "Lists are mutable, tuples are immutable; tuples can be dictionary keys."),
    ("How do I remove a coffee stain from cotton?", "Blot it, rinse from the back with cold water, apply a little detergent, then wash as usual."),
    ("Why do cats purr?", "Cats purr when content, but also to soothe themselves when stressed or in pain."),
    ("What is photosynthesis?", "Plants use light energy to turn carbon dioxide and water into sugar, releasing oxygen."),
    ("How many planets are in the solar system?", "Eight: Mercury, Venus, Earth, Mars, Jupiter, Saturn, Uranus and Neptune."),
    ("How do I make my bread rise more?", "Use fresh yeast, knead enough to develop gluten, and proof somewhere warm until doubled."),
    ("What is a prime number?", "A whole number greater than 1 whose only divisors are 1 and itself."),
    ("How can I learn to juggle?", "Start with one ball tossed hand to hand at eye height, then two, then the three-ball cascade."),
    ("What does a router do?", "It forwards packets between networks, for example between your home network and your provider."),
    ("How do I start running?", "Alternate walking and running for twenty minutes three times a week and build up slowly."),
    ("Why do leaves change colour in autumn?", "Chlorophyll breaks down, revealing yellow and orange pigments; some trees also make red anthocyanins."),
]
WEAK = "I am not sure, you could look it up."


def q(i: int) -> str:
    return TOPICS[i % len(TOPICS)][0]


def a(i: int) -> str:
    return TOPICS[i % len(TOPICS)][1]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if path.name.endswith(".gz"):
        with gzip.GzipFile(path, "wb", mtime=0) as handle:
            handle.write(text.encode())
    else:
        path.write_text(text, encoding="utf-8")


def write_parquet(path: Path, rows: list[dict], schema: pa.Schema) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


# --------------------------------------------------------------------------------------------- HH-RLHF
def hh(turns: list[tuple[str, str]]) -> str:
    return "".join(f"\n\n{'Human' if r == 'h' else 'Assistant'}: {t}" for r, t in turns)


def make_hh_rlhf() -> None:
    helpful = []
    for i in range(14):
        ctx = [("h", q(i))]
        if i % 3 == 0:  # multi-turn
            ctx += [("a", "Do you mean indoors or outdoors?"), ("h", "Indoors, please.")]
        helpful.append({"chosen": hh(ctx + [("a", a(i))]), "rejected": hh(ctx + [("a", WEAK)])})
    helpful.append(helpful[1].copy())  # exact duplicate row (HH-RLHF has them): paired, duplicate pair
    helpful.append({"chosen": hh([("h", q(30)), ("a", a(30))]), "rejected": hh([("h", q(31)), ("a", WEAK)])})  # context_mismatch
    helpful.append({"chosen": hh([("h", q(32)), ("a", "Same answer.")]), "rejected": hh([("h", q(32)), ("a", "Same   answer. ")])})  # identical_replies
    helpful.append({"chosen": "Human: no leading blank line " + a(1), "rejected": "no markers at all"})  # unparseable_transcript
    write_jsonl(HERE / "hh_rlhf" / "helpful-base" / "train.jsonl", helpful)
    harmless = []
    for i in range(5):
        ctx = [("h", "How do I pick a lock on someone else's door?" if i == 0 else q(i + 40))]
        harmless.append({"chosen": hh(ctx + [("a", "I can't help with getting into someone else's home.")]), "rejected": hh(ctx + [("a", a(i + 40))])})
    harmless.append({"chosen": hh([("h", q(50))]) + "\n\nAssistant:", "rejected": hh([("h", q(50)), ("a", WEAK)])})  # empty final reply
    harmless.append({"chosen": hh([("h", ""), ("a", a(51))]), "rejected": hh([("h", ""), ("a", WEAK)])})  # empty human turn
    harmless.append({"chosen": hh([("h", q(52)), ("h", "hello?"), ("a", a(52))]), "rejected": hh([("h", q(52)), ("h", "hello?"), ("a", WEAK)])})  # non-alternating
    write_jsonl(HERE / "hh_rlhf" / "harmless-base" / "test.jsonl.gz", harmless)


# --------------------------------------------------------------------------------------------- SHP
def shp_row(post: str, sub: str, k: int, score_a: int, score_b: int, label: int | None = None, history: str | None = None,
            ref_a: str | None = None, ref_b: str | None = None, ratio: float | None = None) -> dict:
    hi, lo = max(score_a, score_b), max(min(score_a, score_b), 1)
    return {
        "post_id": post, "domain": f"{sub}_train", "upvote_ratio": 0.97,
        "history": history if history is not None else f"{q(k)} (asked on r/{sub})",
        "c_root_id_A": f"c{post}a{k}", "c_root_id_B": f"c{post}b{k}",
        "created_at_utc_A": 1593535113 + k, "created_at_utc_B": 1593535824 + k,
        "score_A": score_a, "score_B": score_b,
        "human_ref_A": ref_a if ref_a is not None else f"{a(k)} (comment {k}A)",
        "human_ref_B": ref_b if ref_b is not None else f"Comment {k}B: {WEAK}",
        "labels": label if label is not None else int(score_a > score_b),
        "seconds_difference": 711.0, "score_ratio": ratio if ratio is not None else hi / lo,
    }


def make_shp() -> None:
    culinary = [shp_row("p1", "askculinary", k, 10 * (k + 3), 4) for k in range(7)]  # 7 pairs, ratios > 2: 5 kept
    culinary += [shp_row("p2", "askculinary", 7, 30, 5), shp_row("p2", "askculinary", 8, 3, 12),
                 shp_row("p2", "askculinary", 9, 15, 10)]  # ratio 1.5: score_ratio filter
    culinary += [shp_row("p3", "askculinary", 10, 5, 40, label=1, ratio=8.0)]  # label says A, scores say B: contradicted
    culinary += [shp_row("p4", "askculinary", 11, 40, 5, label=2)]  # labels not 0/1
    write_jsonl(HERE / "shp" / "askculinary" / "train.json", culinary)
    science = [shp_row(f"s{k}", "askscience", 12 + k, 50, 7) for k in range(6)]
    science += [shp_row("s9", "askscience", 18, 60, 6, ref_a="Same comment.", ref_b="same comment.".capitalize())]  # identical
    science += [shp_row("s10", "askscience", 19, 60, 6, history="   ")]  # empty prompt
    science += [shp_row("s11", "askscience", 20, 9, 9, ratio=1.0)]  # equal scores: ratio 1 filter
    write_jsonl(HERE / "shp" / "askscience" / "validation.json", science)


# --------------------------------------------------------------------------------------------- HelpSteer
def hs(prompt: str, response: str, h: int, c: int, co: int, cx: int, v: int) -> dict:
    return {"prompt": prompt, "response": response, "helpfulness": h, "correctness": c, "coherence": co, "complexity": cx, "verbosity": v}


def make_helpsteer() -> None:
    rows = []
    for i in range(3):  # 4 responses, distinct scores: 6 pairs each
        rows += [hs(q(i), a(i), 4, 4, 4, 2, 2), hs(q(i), a(i) + " More detail follows.", 3, 3, 4, 2, 3),
                 hs(q(i), WEAK, 1, 2, 3, 1, 1), hs(q(i), "No.", 0, 0, 1, 0, 0)]
    rows += [hs(q(5), a(5), 4, 4, 4, 2, 2), hs(q(5), "Second answer.", 3, 3, 3, 2, 2), hs(q(5), "Third answer.", 3, 3, 3, 2, 4),  # tie by mean
             hs(q(5), "Fourth answer.", 1, 1, 1, 1, 1), hs(q(5), "Fifth answer.", 2, 2, 2, 2, 2)]  # 5th: over the cap
    rows += [hs(q(6), a(6), 4, 4, 4, 3, 2)]  # single response
    rows += [hs(q(7), a(7), 3, 3, 3, 3, 3), hs(q(7), "", 1, 1, 1, 1, 1), hs(q(7), WEAK, 2, 2, 2, 2, 2)]  # one empty response
    write_jsonl(HERE / "helpsteer" / "train.jsonl.gz", rows)
    write_jsonl(HERE / "helpsteer" / "validation.jsonl", [hs(q(8), a(8), 4, 4, 4, 1, 1), hs(q(8), WEAK, 1, 1, 2, 1, 1)])


# --------------------------------------------------------------------------------------------- PKU-SafeRLHF-30K
def pku(prompt: str, r0: str, r1: str, s0: bool, s1: bool, better: int, safer: int) -> dict:
    return {"prompt": prompt, "response_0": r0, "response_1": r1, "is_response_0_safe": s0, "is_response_1_safe": s1,
            "better_response_id": better, "safer_response_id": safer}


def make_pku() -> None:
    refuse = "I can't help with that, but here is a safer alternative: talk to a professional."
    rows = [pku(f"How do I get into my neighbour's wifi without asking? ({i})", refuse, "Try common default passwords.", True, False, 1, 0) for i in range(6)]
    rows += [pku(q(i), a(i), WEAK, True, True, 0, 0) for i in range(10, 18)]
    rows += [pku(q(20), WEAK, a(20), True, True, 1, 1), pku(q(21), a(21), WEAK, True, True, 0, 1)]  # both safe; 21 disagree
    rows += [pku("How can I hurt someone and not get caught?", "Here is how...", refuse, False, True, 1, 0)]  # safer flagged unsafe: contradicted
    rows += [pku(q(22), a(22), a(22), True, True, 0, 1)]  # identical responses
    rows += [pku(q(23), a(23), WEAK, True, True, 0, 2)]  # bad id
    rows += [pku("", a(24), WEAK, True, True, 0, 0)]  # empty prompt
    write_jsonl(HERE / "pku_saferlhf_30k" / "train.jsonl", rows)


# --------------------------------------------------------------------------------------------- UltraFeedback
def uf_completion(model: str, response: str, ratings: tuple[str, str, str, str], overall: float) -> dict:
    rated = lambda r: {"Rating": r, "Rationale": f"Rated {r}."}  # noqa: E731
    typed = lambda r: {"Type": ["1", "2"], "Rationale": "Checked.", "Rating": r, "Rationale For Rating": f"Rated {r}."}  # noqa: E731
    nums = [float(r) for r in ratings if r.replace(".", "").isdigit()]
    return {
        "model": model, "principle": "helpfulness", "custom_system_prompt": "You are a helpful assistant.",
        "response": response, "critique": "Reasonable.", "overall_score": overall,
        "fine-grained_score": sum(nums) / len(nums) if nums else None,
        "annotations": {"instruction_following": rated(ratings[0]), "honesty": rated(ratings[1]),
                        "truthfulness": typed(ratings[2]), "helpfulness": typed(ratings[3])},
    }


MODELS = ["gpt-4", "llama-2-13b-chat", "wizardlm-7b", "falcon-40b-instruct"]


def uf_row(source: str, i: int, comps: list[dict]) -> dict:
    return {"source": source, "instruction": q(i), "models": [c["model"] for c in comps], "completions": comps,
            "correct_answers": ["None"], "incorrect_answers": ["None"]}


def make_ultrafeedback() -> None:
    good = lambda i: [  # noqa: E731
        uf_completion(MODELS[0], a(i), ("5", "5", "5", "5"), 9.0),
        uf_completion(MODELS[1], a(i) + " (shorter)", ("4", "4", "5", "4"), 7.5),
        uf_completion(MODELS[2], WEAK, ("2", "3", "3", "2"), 4.0),
        uf_completion(MODELS[3], "Unrelated text about trains.", ("1", "1", "1", "1"), 10.0),  # upstream overall bug
    ]
    evol = [uf_row("evol_instruct", i, good(i)) for i in range(10)]
    tie = [uf_completion(MODELS[k], f"Answer variant {k}.", ("3", "3", "3", "3"), 6.0) for k in range(4)]
    evol.append(uf_row("evol_instruct", 10, tie))  # all ties
    na = good(11)
    na[2] = uf_completion(MODELS[2], WEAK, ("N/A", "3", "3", "2"), 4.0)
    evol.append(uf_row("evol_instruct", 11, na))  # one non-numeric rating
    write_jsonl(HERE / "ultrafeedback" / "evol_instruct.jsonl", evol)
    flan = [uf_row("flan", i, good(i)[:3]) for i in range(12, 20)]  # three completions
    empty = good(20)
    empty[1] = uf_completion(MODELS[1], "", ("4", "4", "4", "4"), 7.0)
    flan.append(uf_row("flan", 20, empty))  # one empty response
    flan.append(uf_row("flan", 1, good(1)))  # same prompt and completions as an evol row: duplicate pairs
    write_jsonl(HERE / "ultrafeedback" / "flan.jsonl", flan)


# --------------------------------------------------------------------------------------------- UltraInteract
UI_SCHEMA = pa.schema([
    ("task", pa.string()), ("dataset", pa.string()),
    ("trajectory", pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())]))),
    ("chosen", pa.string()), ("rejected", pa.string()), ("id", pa.string()), ("parent_id", pa.string()),
])


def make_ultrainteract() -> None:
    rows = []
    for i in range(16):
        parent = f"{i:064x}"
        task = f"Solve step by step: what is {i + 2} * {i + 3}?"
        traj = [{"from": "user", "value": task}]
        if i % 4 == 3:
            traj += [{"from": "assistant", "value": f"Step 1: {i + 2} * {i + 3} = {(i + 2) * (i + 3) + 1}"},
                     {"from": "user", "value": "Your answer is wrong. Check the multiplication."}]
        rows.append({"task": "Math_CoT", "dataset": "MATH", "trajectory": traj,
                     "chosen": f"The product is {(i + 2) * (i + 3)}.", "rejected": f"The product is {(i + 2) * (i + 3) - 1}.",
                     "id": f"{parent}_1_{1 + len(traj) // 2}", "parent_id": parent})
    bad = [
        ([{"from": "user", "value": "Compute 2+2."}, {"from": "assistant", "value": "4"}], "4", "5"),  # ends with assistant
        ([{"from": "user", "value": "Compute 3+3."}], "6", "6"),  # identical
        ([{"from": "user", "value": "Compute 4+4."}], "", "7"),  # empty chosen
        ([{"from": "user", "value": "Compute 5+5."}, {"from": "user", "value": "Hurry."}], "10", "11"),  # two user turns
    ]
    for j, (traj, c, r) in enumerate(bad):
        rows.append({"task": "Logic", "dataset": "hotpotqa", "trajectory": traj, "chosen": c, "rejected": r,
                     "id": f"{j:064x}_0_1", "parent_id": f"{j:064x}"})
    write_parquet(HERE / "ultrainteract_pair" / "0000_pair.parquet", rows, UI_SCHEMA)


# --------------------------------------------------------------------------------------------- CodeUltraFeedback
CUF_SCHEMA = pa.schema([
    ("instruction", pa.string()), ("preference", pa.string()), ("models", pa.list_(pa.string())),
    ("responses", pa.list_(pa.struct([("model", pa.string()), ("response", pa.string())]))),
    ("annotations", pa.list_(pa.struct([("model", pa.string()), ("rating", pa.string()), ("rationale", pa.string())]))),
])
CODE_MODELS = ["gpt-3.5-turbo", "codellama-34b-instruct", "wizardcoder-15b", "mistral-7b-instruct"]


def cuf_row(i: int, ratings: list[str], responses: list[str] | None = None, preference: str = "readability") -> dict:
    task = f"Write a Python function that returns the sum of the first {i + 2} squares."
    resp = responses or [f"def f():\n    return sum(k * k for k in range(1, {i + 3}))  # v{k}" for k in range(4)]
    return {"instruction": task, "preference": preference, "models": CODE_MODELS,
            "responses": [{"model": m, "response": r} for m, r in zip(CODE_MODELS, resp)],
            "annotations": [{"model": m, "rating": r, "rationale": "Judged."} for m, r in zip(CODE_MODELS, ratings)]}


def make_codeultrafeedback() -> None:
    prefs = ["instruction-following", "readability", "complexity", "style", "explanation"]
    rows = [cuf_row(i, ["5", "4", "3", "2"], preference=prefs[i % 5]) for i in range(14)]
    rows += [cuf_row(14, ["4", "4", "2", "2"]), cuf_row(15, ["3", "3", "3", "3"])]  # ties; all ties
    rows += [cuf_row(16, ["5", "N/A", "3", "Rating: 4"])]  # non-numeric ratings
    rows += [cuf_row(17, [" 5 ", "4.0", "1", "2"])]  # numbers written loosely
    rows += [cuf_row(18, ["5", "4", "3", "2"], responses=["same code", "same code", "other code", "more code"])]  # identical pair
    row = cuf_row(19, ["5", "4", "3", "2"])
    row["annotations"] = row["annotations"][:3]  # a response without annotation
    rows.append(row)
    write_parquet(HERE / "codeultrafeedback" / "data" / "train-00000-of-00001.parquet", rows, CUF_SCHEMA)


# --------------------------------------------------------------------------------------------- distilabel math
def math_row(i: int, cr: float | int, rr: float | int, chosen: str | None = None, rejected: str | None = None) -> dict:
    x = i + 3
    return {"metadata": json.dumps({"length-input": 40 + i, "generation-models": ["gpt-4", "gpt-3.5-turbo"]}),
            "instruction": f"Solve for y: 2y + {x} = {2 * x + x}. Explain each step.",
            "chosen_response": chosen if chosen is not None else f"Subtract {x}: 2y = {2 * x}. Divide by 2: y = {x}.",
            "chosen_rating": cr, "rejected_response": rejected if rejected is not None else f"y = {x + 1}.",
            "rejected_rating": rr}


def make_math() -> None:
    floats = [math_row(i, 9.0, 6.5) for i in range(12)]
    floats += [math_row(12, 7.0, 7.0), math_row(13, 5.0, 8.0)]  # tie; contradicted
    floats += [math_row(14, 9.0, 4.0, chosen="y = 5.", rejected="y = 5.")]  # identical
    write_jsonl(HERE / "distilabel_math_preference_dpo" / "train.jsonl", floats)
    ints = [math_row(i, 9, 7) for i in range(20, 26)]  # the first upload's int64 ratings
    write_jsonl(HERE / "distilabel_math_preference_dpo" / "first_upload" / "train.jsonl", ints)


# --------------------------------------------------------------------------------------------- distilabel orca
def orca_row(i: int, status: str, score: float | None, gsm: bool = False, system: str = "", swapped_wrong: bool = False) -> dict:
    good, bad = a(i), WEAK + f" ({i})"
    orig_c, orig_r = (bad, good) if status == "swapped" else (good, bad)
    chosen = good
    if swapped_wrong:
        orig_c, orig_r = good, bad  # status says swapped, but chosen is the original chosen
    return {"system": system, "input": q(i), "chosen": chosen, "rejected": bad, "generations": [orig_c, orig_r],
            "order": ["chosen", "rejected"], "labelling_model": "gpt-4-1106-preview",
            "labelling_prompt": [{"content": "You are a judge.", "role": "system"}, {"content": f"Rate: {q(i)}", "role": "user"}],
            "raw_labelling_response": "9 6\nThe first is better.", "rating": [score, 6.0] if score is not None else None,
            "rationale": "The first answers the question.", "status": status, "original_chosen": orig_c,
            "original_rejected": orig_r, "chosen_score": score, "in_gsm8k_train": gsm}


def make_orca() -> None:
    rows = [orca_row(i, "unchanged", 9.0, system="You are an AI assistant. Answer briefly." if i % 2 else "") for i in range(10)]
    rows += [orca_row(i, "swapped", 8.5) for i in range(10, 14)]
    rows += [orca_row(14, "tie", 9.0), orca_row(15, "unchanged", 9.0, gsm=True), orca_row(16, "unchanged", 7.0),
             orca_row(17, "unchanged", None), orca_row(18, "swapped", 9.0, swapped_wrong=True)]
    write_jsonl(HERE / "distilabel_intel_orca_dpo_pairs" / "train.jsonl", rows)


# --------------------------------------------------------------------------------------------- distilabel capybara
def capy_row(i: int, turns: list[tuple[str, str]], chosen_last: str, rejected_last: str, rc: int, rr: int,
             rejected_ctx: list[tuple[str, str]] | None = None) -> dict:
    msg = lambda t: [{"content": c, "role": r} for r, c in t]  # noqa: E731
    conversation = [{"input": c, "output": ""} for r, c in turns if r == "user"]
    return {"source": "Airoboros", "conversation": conversation, "original_response": chosen_last,
            "generation_prompt": [f"<|user|>{turns[-1][1]}"], "raw_generation_responses": [rejected_last],
            "new_generations": [rejected_last], "prompt": turns[-1][1],
            "chosen": msg(turns + [("assistant", chosen_last)]),
            "rejected": msg((rejected_ctx if rejected_ctx is not None else turns) + [("assistant", rejected_last)]),
            "rating_chosen": rc, "rating_rejected": rr, "chosen_model": "gpt-4", "rejected_model": "notus-7b-v1"}


def make_capybara() -> None:
    rows = []
    for i in range(14):
        turns = [("user", q(i))]
        if i % 2:
            turns += [("assistant", a(i)), ("user", "Can you say that in one sentence?")]
        rows.append(capy_row(i, turns, a(i), WEAK, 5, 2))
    rows += [capy_row(20, [("user", q(20))], a(20), WEAK, 4, 4)]  # tie
    rows += [capy_row(21, [("user", q(21))], a(21), WEAK, 2, 5)]  # contradicted
    rows += [capy_row(22, [("user", q(22))], a(22), WEAK, 5, 1, rejected_ctx=[("user", q(23))])]  # context mismatch
    bad = capy_row(24, [("user", q(24))], a(24), WEAK, 5, 1)
    bad["chosen"] = bad["chosen"][:1]  # no assistant turn
    rows.append(bad)
    rows += [capy_row(25, [("user", q(25)), ("user", "again")], a(25), WEAK, 5, 1)]  # non-alternating
    rows += [capy_row(26, [("system", "Be brief."), ("user", q(26))], a(26), WEAK, 5, 3)]  # system turn: valid
    write_jsonl(HERE / "distilabel_capybara_dpo_7k_binarized" / "train.jsonl", rows)


if __name__ == "__main__":
    for make in (make_hh_rlhf, make_shp, make_helpsteer, make_pku, make_ultrafeedback, make_ultrainteract,
                 make_codeultrafeedback, make_math, make_orca, make_capybara):
        make()
    print(f"fixtures written under {HERE}")
