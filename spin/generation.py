"""Self-play generation backends.

A backend turns already formatted prompt texts into completions. Generation is the slowest
stage of an iteration on a CPU, so the HF backend writes its output in shards: an interrupted
run resumes at the first missing shard instead of starting over, and a finished one is
reused without touching the model.
"""

from __future__ import annotations

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

BACKENDS = ("hf",)


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


class HFGenerator:
    """Batched ``model.generate`` with left padding, length-sorted batches and shard resume."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cfg: Any):
        if tokenizer.pad_token_id is None:
            raise ValueError(
                "the tokenizer has no pad token; batched generation needs one "
                "(spin.models.load_model sets it to the eos token)"
            )
        self.model = model
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
        shard_size = self.cfg.shard_size
        if shard_dir is not None:
            shard_dir = Path(shard_dir)
            shard_dir.mkdir(parents=True, exist_ok=True)
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
                torch.manual_seed(self.cfg.seed + shard_index)
                shard_ids = prompt_ids[start : start + shard_size] if prompt_ids else None
                texts, n_tokens = self._generate_shard(shard_prompts, bar, shard_ids)
                generated_tokens += n_tokens
                if path is not None:
                    write_shard(path, start, shard_prompts, texts)
                completions.extend(texts)
        seconds = time.perf_counter() - started
        self.last_stats = {
            "generated_tokens": generated_tokens,
            "seconds": seconds,
            "tokens_per_second": generated_tokens / seconds if seconds > 0 else 0.0,
            "reused_shards": reused_shards,
        }
        return completions

    def _generate_shard(
        self, prompts: list[str], bar: tqdm, prompt_ids: list[list[int]] | None = None
    ) -> tuple[list[str], int]:
        """Completions of one shard in its input order, and the number of tokens generated."""
        # The prompt texts already carry the template's special tokens; adding more (a BOS)
        # would make generation see a different prefix than the one used in training.
        encoded = prompt_ids or self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        texts: list[str] = [""] * len(prompts)
        n_tokens = 0
        for batch in length_sorted_batches([len(ids) for ids in encoded], self.cfg.batch_size):
            batch_texts, batch_tokens = self._generate_batch([encoded[i] for i in batch])
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
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return [t.strip() for t in texts], count_generated(new_tokens, self.tokenizer.eos_token_id)

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


def make_generator(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cfg: Any
) -> HFGenerator:
    """The generation backend named by ``cfg.backend``."""
    if cfg.backend == "hf":
        return HFGenerator(model, tokenizer, cfg)
    raise ValueError(
        f"generation.backend={cfg.backend!r} is not available; expected one of {list(BACKENDS)}"
    )
