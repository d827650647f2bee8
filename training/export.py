"""Export a training snapshot out of the lake, in the layout the ecosystem reads: ``prefhouse export --out DIR``.

The lake keeps every pair as whole conversations (``prompt``, and ``chosen`` / ``rejected`` that repeat the
prompt's turns before the final reply). TRL's conversational preference format is an explicit ``prompt``
(a message list) plus ``chosen`` / ``rejected`` holding only the completion, so the export keeps just the
final assistant message of each side; handing TRL the lake's columns unchanged would make it read the
prompt twice. The folder holds ``train.parquet`` (and ``eval.parquet`` when the selection holds prompts
out) and a dataset card, ``README.md``, naming the snapshot hash, table versions, selection and code
version, so ``datasets.load_dataset("parquet", data_files=…)`` and ``DPOTrainer`` take it as it is and the
files remain traceable to the exact lake snapshot. A Parquet glob over the lake's own folders would also
pick up files no version references (uncommitted or removed); the export reads through the Delta log.
"""

from __future__ import annotations

if __name__ == "__main__":  # run as a script: the process is set up and a --help answered here, before the imports below load polars, DuckDB, torch…
    from prefhouse.pipelines.core.process import start
    from prefhouse.training.settings import export_parser

    start(export_parser)

import json
import os
from dataclasses import asdict
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from prefhouse.pipelines.core.config import dataclass_from_flags
from prefhouse.pipelines.core.lake import Lake
from prefhouse.pipelines.core.runlog import code_version
from prefhouse.training.settings import export_parser as build_parser
from prefhouse.training.snapshot import Selection, Snapshot, resolve

COLUMNS = "pair_id, prompt_id, source, iteration, split, prompt, chosen, rejected, chosen_score, rejected_score"


def trl_rows(rows: pa.Table) -> pa.Table:
    """Lake pairs as TRL conversational preference rows: ``prompt`` messages, ``chosen``/``rejected`` = the final reply only."""
    def last_turn(column: str) -> pa.Array:
        lists = rows.column(column).combine_chunks()
        last = pc.subtract(lists.offsets[1:], 1)  # each row's final message, as an index into the flat messages
        return pa.ListArray.from_arrays(pa.array(range(len(lists) + 1), pa.int32()), lists.values.take(last))

    return pa.table({
        "prompt": rows.column("prompt"), "chosen": last_turn("chosen"), "rejected": last_turn("rejected"),
        "pair_id": rows.column("pair_id"), "source": rows.column("source"), "iteration": rows.column("iteration"),
        "split": rows.column("split"), "chosen_score": rows.column("chosen_score"), "rejected_score": rows.column("rejected_score"),
    })


def dataset_card(snapshot: Snapshot, lake: Lake, files: dict[str, str]) -> str:
    """A Hugging Face dataset card: YAML front matter that ``datasets`` reads, then what the snapshot is."""
    configs = "\n".join(f"      - split: {split}\n        path: {name}" for split, name in files.items())
    by_source = {}
    for source in pc.unique(snapshot.train.column("source")).to_pylist():
        by_source[source] = int(pc.sum(pc.equal(snapshot.train.column("source"), source)).as_py())
    return f"""---
configs:
  - config_name: default
    data_files:
{configs}
tags: [dpo, preference, prefhouse]
---
# prefhouse snapshot `{snapshot.snapshot_hash}`

Preference pairs exported from the prefhouse lake `{lake.uri}`, in TRL's conversational preference
format: `prompt` is the message list before the reply, `chosen` and `rejected` hold only the final
assistant message. `pair_id` leads back to the lake (`python -m pipelines.sql pair_provenance --param pair_id=…`).

| | |
|---|---|
| snapshot hash | `{snapshot.snapshot_hash}` |
| table versions | `{json.dumps(snapshot.versions, sort_keys=True)}` |
| selection | `{json.dumps(asdict(snapshot.selection), sort_keys=True, default=str)}` |
| code version | `{code_version()}` |
| train pairs | {snapshot.train.num_rows} |
| eval pairs | {snapshot.eval.num_rows} |
| train pairs by source | `{json.dumps(by_source, sort_keys=True)}` |

Load it with `datasets.load_dataset("parquet", data_files={json.dumps({k: v for k, v in files.items()})})`
(paths relative to this folder), or from the hub by its repository and revision `{snapshot.snapshot_hash}`.
"""


def export_snapshot(lake: Lake, selection: Selection, out: Path, versions: dict[str, int] | None = None) -> Snapshot:
    """Write ``selection`` at ``versions`` (default: latest) to ``out``: Parquet per split and a dataset card."""
    snapshot = resolve(lake, selection, versions, columns=COLUMNS)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, rows in (("train", snapshot.train), ("eval", snapshot.eval)):
        if split == "eval" and not rows.num_rows:
            continue
        name = f"{split}.parquet"
        partial = out / f".{name}.{os.getpid()}.partial"
        pq.write_table(trl_rows(rows), partial)
        partial.replace(out / name)  # a reader never sees half a file
        files[split] = name
    (out / "README.md").write_text(dataset_card(snapshot, lake, files))
    return snapshot


def push_to_hub(out: Path, repo_id: str, snapshot: Snapshot) -> None:  # pragma: no cover - needs network and a token
    """Upload the folder to a hub dataset repository on a branch named after the snapshot hash."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, repo_type="dataset", exist_ok=True)
    api.create_branch(repo_id, branch=snapshot.snapshot_hash, repo_type="dataset", exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=str(out), repo_type="dataset", revision=snapshot.snapshot_hash,
                      commit_message=f"prefhouse snapshot {snapshot.snapshot_hash}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    selection = dataclass_from_flags(Selection, args, "selection")
    versions = {"pairs": args.pairs_version} if args.pairs_version is not None else None
    snapshot = export_snapshot(Lake(args.lake), selection, args.out, versions)
    print(f"snapshot {snapshot.snapshot_hash}: {snapshot.train.num_rows} train, {snapshot.eval.num_rows} eval pairs -> {args.out}")
    if args.push_to_hub:
        push_to_hub(args.out, args.push_to_hub, snapshot)
        print(f"pushed to {args.push_to_hub}@{snapshot.snapshot_hash}")
    return 0


if __name__ == "__main__":
    from prefhouse.pipelines.core.errors import run
    from prefhouse.pipelines.core.process import finish

    finish(run(main))

