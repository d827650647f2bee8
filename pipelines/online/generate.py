"""Generate: n responses per prompt from the current policy (RECIPE §3, stage 2), with vLLM or transformers.

The recipe samples with temperatures 1.0 and 0.7 split across the n samples, no top-k or top-p, up to
``max_new_tokens``. Randomness is seeded from the run's seed and the ids of the prompts sampled together
(transformers: one batch of prompts of similar length; vLLM: one request per prompt and temperature), never
from a global stream, so the same prompts in the same call give the same responses. The iteration calls
an engine once per fixed chunk of its drawn prompts and commits each chunk whole, so a generation stage
resumed after a crash produces exactly the responses an uninterrupted run would have (transformers on
CPU). Response ids are md5(prompt id, iteration, sample index, policy id).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl
from prefhouse.pipelines.core import schema as S
from prefhouse.pipelines.core.ids import with_md5
from prefhouse.pipelines.core.runlog import worker_name
from prefhouse.pipelines.online.settings import SamplingSettings, pick_engine
from tqdm import tqdm


def stop_ids(model_path: str, tokenizer, extra: tuple[int, ...] = ()) -> list[int]:
    """Every id that ends a response: the tokenizer's EOS, the model's ``generation_config`` EOS (an id or a list),
    and ``extra`` (``generate.stop_token_ids``)."""
    ids = {tokenizer.eos_token_id, *extra}
    try:
        from transformers import GenerationConfig

        eos = GenerationConfig.from_pretrained(model_path).eos_token_id
        ids |= set(eos if isinstance(eos, list) else [eos])
    except OSError:  # no generation_config.json: the tokenizer's EOS and the setting
        pass
    return sorted(i for i in ids if i is not None)


def _seed(seed: int, prompt_ids: str, temperature: float) -> int:
    return int(hashlib.md5(f"{seed}|{prompt_ids}|{temperature}".encode()).hexdigest()[:8], 16)


def _frame(rows: list[dict]) -> pl.DataFrame:
    """Rows in the ``responses`` schema, with their ids, made by this process (the executor may say ``ray``)."""
    made_here = ("response_id", "executor", "worker")
    frame = pl.DataFrame(rows, schema={k: v for k, v in pl.from_arrow(S.RESPONSE_SCHEMA.empty_table()).schema.items() if k not in made_here})
    frame = with_md5(frame, "response_id", pl.col("prompt_id"), pl.col("iteration").cast(pl.String), pl.col("sample_index").cast(pl.String),
                     pl.col("policy_model_id"))
    return frame.with_columns(pl.lit("local").alias("executor"), pl.lit(worker_name()).alias("worker")).select(S.RESPONSE_SCHEMA.names)


def _row(prompt_id: str, prompt: list, index: int, text: str, n_tokens: int, ended: bool, temperature: float, engine: str,
         iteration: int, settings: SamplingSettings, policy_model_id: str, run_id: str, now: datetime) -> dict:
    return {
        "prompt_id": prompt_id, "iteration": iteration, "sample_index": index, "prompt": prompt, "response": text.strip(),
        "n_tokens": n_tokens, "finish_reason": "stop" if ended else "length", "temperature": temperature, "top_p": 1.0,
        "max_new_tokens": settings.max_new_tokens, "seed": settings.seed, "engine": engine, "policy_model_id": policy_model_id,
        "run_id": run_id, "created_at": now,
    }


class TransformersEngine:
    """transformers ``generate``: the fallback engine, and the deterministic one (seeded per prompt on CPU)."""

    name = "transformers"

    def __init__(self, model_path: str, batch_sequences: int = 64):
        import torch
        from prefhouse.training.models import fit_embeddings, inference_tokenizer
        from transformers import AutoModelForCausalLM

        self.tokenizer = inference_tokenizer(model_path)
        self.model = fit_embeddings(AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32), self.tokenizer).eval()
        self.batch_sequences, self.model_path = batch_sequences, model_path

    def generate(self, prompts: pl.DataFrame, iteration: int, settings: SamplingSettings, policy_model_id: str, run_id: str,
                 progress: bool = True) -> pl.DataFrame:
        """``prompts``: prompt_id, prompt (message list). Returns rows in the ``responses`` schema, n per prompt.

        Prompts are sorted by length and batched (left-padded) up to ``batch_sequences`` sequences, so one
        forward step serves many samples: on CPU a step costs about the same for 2 or 64 sequences.
        """
        import torch

        tokenizer, now = self.tokenizer, datetime.now(UTC)
        stops = stop_ids(self.model_path, tokenizer, settings.stop_token_ids)
        encoded = [(prompt_id, prompt, tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])
                   for prompt_id, prompt in prompts.select("prompt_id", "prompt").iter_rows()]
        encoded.sort(key=lambda e: (len(e[2]), e[0]))
        per_batch = max(1, self.batch_sequences // settings.n)
        batches = [encoded[i:i + per_batch] for i in range(0, len(encoded), per_batch)]
        samples: dict[str, list[dict]] = {}
        bar = tqdm(total=len(encoded), desc="generate", unit=" prompts", disable=not progress, leave=False)
        for batch in batches:
            width = max(len(ids) for _, _, ids in batch)
            input_ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(ids)) + list(ids) for _, _, ids in batch])
            mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for _, _, ids in batch])
            for temperature, count in settings.per_temperature():
                if count == 0:
                    continue
                torch.manual_seed(_seed(settings.seed, ",".join(p for p, _, _ in batch), temperature))
                with torch.inference_mode():
                    out = self.model.generate(
                        input_ids, attention_mask=mask, do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                        max_new_tokens=settings.max_new_tokens, num_return_sequences=count, pad_token_id=tokenizer.pad_token_id,
                        eos_token_id=stops,
                    )
                for row, sequence in enumerate(out[:, width:]):
                    prompt_id, prompt, _ = batch[row // count]
                    tokens = sequence.tolist()
                    end = next((i for i, t in enumerate(tokens) if t in stops), None)
                    ended = end is not None
                    tokens = tokens[:end] if ended else [t for t in tokens if t != tokenizer.pad_token_id]
                    mine = samples.setdefault(prompt_id, [])
                    mine.append(_row(prompt_id, prompt, len(mine), tokenizer.decode(tokens, skip_special_tokens=True), len(tokens), ended,
                                     temperature, self.name, iteration, settings, policy_model_id, run_id, now))
            bar.update(len(batch))
        bar.close()
        return _frame([row for prompt_id, _, _ in encoded for row in samples[prompt_id]])

    def close(self) -> None:
        del self.model


class VllmEngine:
    """vLLM: one request per (prompt, temperature) with its own seed, all in one ``LLM.generate`` call.

    Every prompt is one request, so none is dropped or duplicated by sharding. vLLM's engine runs in a
    spawned process: the calling script needs an ``if __name__ == "__main__"`` guard. On CPU it runs float32
    and eager (bfloat16 initialised ~25x slower on this AVX2 machine), on every core the process may use
    (``VLLM_CPU_OMP_THREADS_BIND``; vLLM's default reserves one), and ``VLLM_CPU_KVCACHE_SPACE`` (GiB,
    default 2 here) bounds its cache; any of these set in the environment wins. Seeded requests make a run repeatable on the same machine and build;
    vLLM does not promise the same samples across versions, batch shapes or hardware, so a resumed vLLM
    stage keeps the responses already in the lake and generates only the prompts that have none.
    """

    name = "vllm"

    def __init__(self, model_path: str, seed: int = 42, tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.9,
                 max_model_len: int | None = None):
        import os

        import torch
        from prefhouse.training.models import inference_tokenizer
        from vllm import LLM

        cpu = not torch.cuda.is_available()
        if cpu:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
            cores = sorted(os.sched_getaffinity(0))
            if cores == list(range(len(cores))):  # by default vLLM keeps one core for itself: 2.8x the tokens/s with both here
                os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{len(cores) - 1}")
                os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
        self.tokenizer = inference_tokenizer(model_path)
        self.model_path = model_path
        options = self._cpu_scheduling(model_path) if cpu else {"tensor_parallel_size": tensor_parallel_size,
                                                                  "gpu_memory_utilization": gpu_memory_utilization}
        if max_model_len:
            options["max_model_len"] = max_model_len
        self.llm = LLM(model=model_path, dtype="float32" if cpu else "auto", enforce_eager=cpu, seed=seed, disable_log_stats=True, **options)

    @staticmethod
    def _cpu_scheduling(model_path: str) -> dict:
        """No chunked prefill on CPU: vLLM 0.32 rewinds a seeded request's generator when it discards the token of a
        partial prefill, which CPU generators cannot do ("CPU Generator does not use offset"); whole prefills avoid it."""
        from transformers import AutoConfig

        longest = int(getattr(AutoConfig.from_pretrained(model_path), "max_position_embeddings", 8192))
        return {"enable_chunked_prefill": False, "max_num_batched_tokens": max(longest, 8192), "max_model_len": longest}

    def generate(self, prompts: pl.DataFrame, iteration: int, settings: SamplingSettings, policy_model_id: str, run_id: str,
                 progress: bool = True) -> pl.DataFrame:
        from vllm import SamplingParams

        requests, params, keys = [], [], []
        stops = stop_ids(self.model_path, self.tokenizer, settings.stop_token_ids)
        for prompt_id, prompt in prompts.select("prompt_id", "prompt").iter_rows():
            ids = self.tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
            for temperature, count in settings.per_temperature():
                if count:
                    requests.append({"prompt_token_ids": list(ids)})
                    params.append(SamplingParams(n=count, temperature=temperature, top_p=1.0, top_k=0, max_tokens=settings.max_new_tokens,
                                                 seed=_seed(settings.seed, prompt_id, temperature), stop_token_ids=stops))
                    keys.append((prompt_id, prompt, temperature))
        outputs = self.llm.generate(requests, params, use_tqdm=progress) if requests else []
        now, rows, index = datetime.now(UTC), [], {}
        for (prompt_id, prompt, temperature), output in zip(keys, outputs, strict=True):
            for completion in output.outputs:
                i = index.get(prompt_id, 0)
                index[prompt_id] = i + 1
                rows.append(_row(prompt_id, prompt, i, completion.text, len(completion.token_ids), completion.finish_reason == "stop",
                                 temperature, self.name, iteration, settings, policy_model_id, run_id, now))
        return _frame(rows)

    def close(self) -> None:
        engine = getattr(self.llm, "llm_engine", None)
        if engine is not None and hasattr(engine, "engine_core"):
            engine.engine_core.shutdown()  # stops the spawned engine process now, not at interpreter exit
        del self.llm


def load_engine(engine: str, model_path: str, seed: int = 42, **vllm_options) -> TransformersEngine | VllmEngine:
    """The engine ``engine`` names; ``vllm_options`` (tensor_parallel_size, gpu_memory_utilization, max_model_len) go to vLLM."""
    return VllmEngine(model_path, seed, **vllm_options) if pick_engine(engine) == "vllm" else TransformersEngine(model_path)


@dataclass
class GenerateReplica:
    """Generation as an executor's replica: the engine loaded once per process (on first use), one shard of prompts per call."""

    engine: str
    model_path: str
    sampling: SamplingSettings
    iteration: int
    policy_model_id: str
    run_id: str
    vllm_options: dict
    progress: bool = True

    def __call__(self, prompts: pl.DataFrame) -> pl.DataFrame:
        if getattr(self, "_engine", None) is None:
            self._engine = load_engine(self.engine, self.model_path, self.sampling.seed, **self.vllm_options)
        return self._engine.generate(prompts, self.iteration, self.sampling, self.policy_model_id, self.run_id, self.progress)

    def close(self) -> None:
        if getattr(self, "_engine", None) is not None:
            self._engine.close()
            self._engine = None
