"""Self-play generation backends.

A backend turns already formatted prompts into completions. Generation is the slowest
stage of an iteration, so every backend writes its output in shards: an interrupted run
resumes at the first missing shard instead of starting over, and a finished one is reused
without touching the model. The shard loop lives in :class:`ShardedGenerator`; a backend
only says how one shard of token id lists becomes texts.

- ``hf``: batched ``model.generate`` on the already loaded model (:class:`HFGenerator`).
- ``vllm``: a vLLM engine over the model's directory (:class:`VLLMGenerator`), installed
  with ``pip install -e .[vllm]``. It is fed the same token ids and the same decoding
  settings and writes the same shard files, resumed the same way. The backend is part of a
  generation set's artifact key all the same (``generation.*``): its kernels and random
  numbers differ, so its completions may too.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from spin.errors import ConfigError
from spin.models import hub_revision
from spin.names import BACKENDS

# A sampled completion's seed: (generation.seed + its shard's index) * SEED_STRIDE + its place
# in the shard, the HF backend's per-shard seed spread over the shard's prompts.
SEED_STRIDE = 2**32


def require_backend(backend: str) -> None:
    """Fail before any work when ``backend``'s package is missing, naming how to install it."""
    if backend == "vllm" and importlib.util.find_spec("vllm") is None:
        raise ConfigError(
            "generation.backend='vllm' needs the vllm package, which is not installed: "
            "pip install -e '.[vllm]' (the project's `vllm` extra; vLLM wants a CUDA GPU), "
            "or use generation.backend=hf"
        )


def shard_path(shard_dir: Path, shard_index: int) -> Path:
    """The file of one shard; zero-padded so a directory listing is in generation order."""
    return shard_dir / f"shard-{shard_index:05d}.jsonl"


def read_shard(path: Path, start: int, prompts: list[str]) -> list[str] | None:
    """Completions stored in ``path`` for ``prompts`` (input positions from ``start``).

    Returns None when the shard was never finished. A shard holding other prompts means the
    data changed under an existing output directory: reusing it would silently pair prompts
    with the wrong answers, so it is an error.
    """
    if not path.exists():
        return None
    rows = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_no}: not a JSON object ({err})") from err
    stored = [(row.get("index"), row.get("prompt")) for row in rows]
    expected = list(enumerate(prompts, start=start))
    if stored != expected:
        raise ValueError(
            f"{path}: holds {len(rows)} prompts that do not match the {len(prompts)} prompts "
            f"at positions {start}..{start + len(prompts) - 1} of this run (the data or "
            "generation.shard_size changed); delete the shard directory to regenerate"
        )
    return [row["completion"] for row in rows]


def write_shard(path: Path, start: int, prompts: list[str], completions: list[str]) -> None:
    """Write a shard atomically, so a crash mid-write never leaves a shard that looks done."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for i, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
                row = {"index": start + i, "prompt": prompt, "completion": completion}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def length_sorted_batches(lengths: list[int], batch_size: int) -> Iterator[list[int]]:
    """Positions grouped into batches of similar length, longest first.

    Similar lengths waste less compute on padding; longest first makes an out-of-memory
    error show up at once rather than at the end of a long run.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    for begin in range(0, len(order), batch_size):
        yield order[begin : begin + batch_size]


def count_generated(new_tokens: torch.Tensor, eos_token_id: int | None) -> int:
    """Tokens each row really produced: up to and including its first eos, not the pads after."""
    if eos_token_id is None:
        return new_tokens.numel()
    is_eos = new_tokens == eos_token_id
    has_eos = is_eos.any(dim=1)
    first_eos = is_eos.int().argmax(dim=1)
    per_row = torch.where(has_eos, first_eos + 1, new_tokens.shape[1])
    return int(per_row.sum())


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: list[str]) -> list[list[int]]:
    """Token ids of formatted prompt texts, for callers that pass no ``prompt_ids``.

    The texts already carry the template's special tokens; adding more (a BOS) would make
    generation see a different prefix than the one used in training.
    """
    return tokenizer(prompts, add_special_tokens=False)["input_ids"]


class ShardedGenerator:
    """The shard loop every backend shares: resume, prompt ids, statistics.

    Subclasses implement :meth:`_generate_shard`, which turns one shard's token id lists
    into completion texts (stripped, special tokens removed) and counts generated tokens.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, cfg: Any):
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.last_stats: dict[str, float | int] = {}

    def generate(
        self,
        prompts: list[str],
        shard_dir: Path | None = None,
        desc: str = "generate",
        prompt_ids: list[list[int]] | None = None,
    ) -> list[str]:
        """Completions of ``prompts`` in input order; shards in ``shard_dir`` are reused.

        ``prompt_ids``, when given, are the token ids fed for each prompt in place of its
        tokenised text: the ids training scores, cut to ``model.max_prompt_length``
        (:meth:`spin.data.PromptFormatter.prompt_ids`). Shards are keyed by the texts.
        """
        if prompt_ids is not None and len(prompt_ids) != len(prompts):
            raise ValueError(
                f"prompt_ids holds {len(prompt_ids)} prompts; expected one per prompt text "
                f"({len(prompts)})"
            )
        started = time.perf_counter()
        if shard_dir is not None:
            shard_dir = Path(shard_dir)
            shard_dir.mkdir(parents=True, exist_ok=True)
        try:
            completions, generated_tokens, reused_shards = self._shards(
                prompts, shard_dir, desc, prompt_ids
            )
        finally:
            self._finish()
        seconds = time.perf_counter() - started
        self.last_stats = {
            "generated_tokens": generated_tokens,
            "seconds": seconds,
            "tokens_per_second": generated_tokens / seconds if seconds > 0 else 0.0,
            "reused_shards": reused_shards,
        }
        return completions

    def _shards(
        self,
        prompts: list[str],
        shard_dir: Path | None,
        desc: str,
        prompt_ids: list[list[int]] | None,
    ) -> tuple[list[str], int, int]:
        """Every shard read back or generated: completions, tokens generated, shards reused."""
        shard_size = self.cfg.shard_size
        completions: list[str] = []
        generated_tokens = 0
        reused_shards = 0
        with tqdm(total=len(prompts), desc=desc, unit="prompt") as bar:
            for shard_index, start in enumerate(range(0, len(prompts), shard_size)):
                shard_prompts = prompts[start : start + shard_size]
                path = shard_path(shard_dir, shard_index) if shard_dir is not None else None
                stored = read_shard(path, start, shard_prompts) if path is not None else None
                if stored is not None:
                    reused_shards += 1
                    completions.extend(stored)
                    bar.update(len(stored))
                    continue
                if prompt_ids is not None:
                    shard_ids = prompt_ids[start : start + shard_size]
                else:
                    shard_ids = encode_prompts(self.tokenizer, shard_prompts)
                texts, n_tokens = self._generate_shard(shard_ids, start, shard_index, bar)
                generated_tokens += n_tokens
                if path is not None:
                    write_shard(path, start, shard_prompts, texts)
                completions.extend(texts)
        return completions, generated_tokens, reused_shards

    def _generate_shard(
        self, prompt_ids: list[list[int]], start: int, shard_index: int, bar: tqdm
    ) -> tuple[list[str], int]:
        """Completions of one shard (input positions from ``start``) in its input order, and
        the number of tokens generated; advances ``bar`` by the prompts done."""
        raise NotImplementedError

    def _finish(self) -> None:
        """Release what the backend held for generating, once a call is done."""

    def _decode(self, token_ids: list[int] | torch.Tensor) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True).strip()


class HFGenerator(ShardedGenerator):
    """Batched ``model.generate`` with left padding, length-sorted batches and shard resume."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cfg: Any):
        if tokenizer.pad_token_id is None:
            raise ValueError(
                "the tokenizer has no pad token; batched generation needs one "
                "(spin.models.load_model sets it to the eos token)"
            )
        super().__init__(tokenizer, cfg)
        self.model = model

    def _generate_shard(
        self, prompt_ids: list[list[int]], start: int, shard_index: int, bar: tqdm
    ) -> tuple[list[str], int]:
        # Seeded per shard, so a resumed run samples each shard as an uninterrupted one did.
        torch.manual_seed(self.cfg.seed + shard_index)
        texts: list[str] = [""] * len(prompt_ids)
        n_tokens = 0
        lengths = [len(ids) for ids in prompt_ids]
        for batch in length_sorted_batches(lengths, self.cfg.batch_size):
            batch_texts, batch_tokens = self._generate_batch([prompt_ids[i] for i in batch])
            for position, text in zip(batch, batch_texts, strict=True):
                texts[position] = text
            n_tokens += batch_tokens
            bar.update(len(batch))
        return texts, n_tokens

    def _generate_batch(self, input_ids: list[list[int]]) -> tuple[list[str], int]:
        """Generate for one left-padded batch of token id lists."""
        # Left padding keeps every prompt's last token at the end of the row, where
        # generation continues; the attention mask keeps positions and attention exact.
        padded = self.tokenizer.pad(
            {"input_ids": input_ids}, padding_side="left", return_tensors="pt"
        ).to(self.model.device)
        self.model.eval()
        with torch.inference_mode():
            output = self.model.generate(
                **padded, **self._decoding_kwargs(), max_new_tokens=self.cfg.max_new_tokens
            )
        new_tokens = output[:, padded["input_ids"].shape[1] :]
        texts = [self._decode(row) for row in new_tokens]
        return texts, count_generated(new_tokens, self.tokenizer.eos_token_id)

    def _decoding_kwargs(self) -> dict[str, Any]:
        """Greedy or sampling settings; greedy clears sampling knobs a model config may set."""
        common = {
            "eos_token_id": self.tokenizer.eos_token_id,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if self.cfg.do_sample:
            return {
                **common,
                "do_sample": True,
                "temperature": self.cfg.temperature,
                "top_p": self.cfg.top_p,
                "top_k": None,
            }
        return {**common, "do_sample": False, "temperature": None, "top_p": None, "top_k": None}


class VLLMGenerator(ShardedGenerator):
    """Generation by a vLLM engine over the model's directory, one engine call per shard.

    What it shares with :class:`HFGenerator`: the prompt token ids (vLLM never tokenises
    the texts itself), greedy or sampling with the same temperature and top-p (top-k off),
    ``max_new_tokens``, a stop at the tokenizer's eos, and decoding of the new tokens with
    the same tokenizer (special tokens skipped, whitespace stripped). Sampled completions
    differ from the HF backend's (another random number stream), but each prompt has its
    own seed from ``generation.seed``, its shard's index and its place in the shard
    (:data:`SEED_STRIDE`), so a resumed run, or one whose shards are spread over processes
    with the seed offset by a block's first shard as the HF backend's are, samples the same
    text. vLLM schedules its own batches, so ``generation.batch_size`` is not used.

    The engine is started on the first shard that needs generating (a fully reused set
    never starts it) and released at the end of each :meth:`generate` call, since the next
    stage (the reference pass) needs the accelerator's memory.
    """

    def __init__(
        self,
        location: str | Path,
        tokenizer: PreTrainedTokenizerBase,
        cfg: Any,
        dtype: str = "auto",
        trust_remote_code: bool = False,
        revision: str | None = None,
    ):
        require_backend("vllm")
        super().__init__(tokenizer, cfg)
        self.location = str(location)
        self.dtype = dtype
        self.trust_remote_code = trust_remote_code
        self.revision = hub_revision(location, revision)
        self._engine: Any = None

    def sampling_params(self, shard_index: int, count: int) -> list[Any]:
        """vLLM's SamplingParams of the ``count`` prompts of shard ``shard_index``: one per
        prompt when sampling, each with its own seed; greedy needs no seed."""
        from vllm import SamplingParams

        stop = {"stop_token_ids": [self.tokenizer.eos_token_id]}
        if self.tokenizer.eos_token_id is None:
            stop = {}
        common = {"max_tokens": self.cfg.max_new_tokens, "n": 1, **stop}
        if not self.cfg.do_sample:
            return [SamplingParams(temperature=0.0, top_p=1.0, **common)] * count
        return [
            SamplingParams(
                temperature=self.cfg.temperature,
                top_p=self.cfg.top_p,
                seed=(self.cfg.seed + shard_index) * SEED_STRIDE + i,
                **common,
            )
            for i in range(count)
        ]

    def _generate_shard(
        self, prompt_ids: list[list[int]], start: int, shard_index: int, bar: tqdm
    ) -> tuple[list[str], int]:
        requests = [{"prompt_token_ids": list(ids)} for ids in prompt_ids]
        params = self.sampling_params(shard_index, len(prompt_ids))
        outputs = self.engine().generate(requests, params, use_tqdm=False)
        texts, n_tokens = [], 0
        for output in outputs:
            token_ids = list(output.outputs[0].token_ids)
            texts.append(self._decode(token_ids))
            n_tokens += len(token_ids)
        bar.update(len(prompt_ids))
        return texts, n_tokens

    def engine(self) -> Any:
        """The vLLM engine, started on first use."""
        if self._engine is None:
            from vllm import LLM

            self._engine = LLM(
                model=self.location,
                tokenizer=self.location,
                dtype=self.dtype,
                seed=self.cfg.seed,
                trust_remote_code=self.trust_remote_code,
                revision=self.revision,
                tokenizer_revision=self.revision,
            )
        return self._engine

    def _finish(self) -> None:
        if self._engine is None:
            return
        self._engine = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def make_generator(
    model: PreTrainedModel | str | Path,
    tokenizer: PreTrainedTokenizerBase,
    cfg: Any,
    dtype: str | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
) -> ShardedGenerator:
    """The generation backend named by ``cfg.backend``.

    ``hf`` needs the loaded model. ``vllm`` loads the weights itself and needs only their
    directory: pass it (``model`` as a path) so no second copy sits in the accelerator's
    memory; given a loaded model it uses the directory the model was loaded from and its
    dtype. ``dtype`` (``model.dtype``'s names) is what vLLM computes in; None: the loaded
    model's, or the checkpoint's own for a path. ``revision`` (``model.revision``) is the
    one vLLM loads a hub id at.
    """
    if cfg.backend == "hf":
        if isinstance(model, str | Path):
            raise TypeError("generation.backend='hf' needs a loaded model, not a path")
        return HFGenerator(model, tokenizer, cfg)
    if cfg.backend == "vllm":
        if isinstance(model, str | Path):
            return VLLMGenerator(
                model, tokenizer, cfg, dtype or "auto", trust_remote_code, revision
            )
        loaded_dtype = str(model.dtype).removeprefix("torch.")
        return VLLMGenerator(
            model.name_or_path, tokenizer, cfg, dtype or loaded_dtype, trust_remote_code, revision
        )
    raise ValueError(
        f"generation.backend={cfg.backend!r} is not available; expected one of {list(BACKENDS)}"
    )
