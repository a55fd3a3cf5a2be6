"""The one prompt format shared by self-play generation and training.

The official SPIN code generates with one prompt format and trains with another, so the
model is trained on text it never produced. Here both sides go through one
:class:`PromptFormatter`: generation feeds ``prompt_text(p)`` to the model and training
scores ``prompt_text(p) + response_text(y)``, for real and generated ``y`` alike. A prompt
longer than ``model.max_prompt_length`` tokens is cut the same way on both sides
(:meth:`PromptFormatter.prompt_ids`), or refused up front (:meth:`PromptFormatter.check_lengths`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

from spin.errors import ConfigError, DataError

log = logging.getLogger(__name__)

CHAT = "chat"
# model.prompt_overflow: what happens to a prompt longer than model.max_prompt_length.
TRUNCATE, REJECT = "truncate", "reject"
# model.truncation: "prompt" cuts every prompt over model.max_prompt_length, in generation
# and training alike; "pair" is the official SPIN code's rule: generation never cuts, and
# training cuts a prompt only when it and the longer response of its pair exceed
# model.max_length (then both responses to max_length - max_prompt_length as well).
PROMPT, PAIR = "prompt", "pair"
EXAMPLE_TEMPLATE = "### Instruction: {prompt}\\n\\n### Response: "
# A stand-in prompt for deriving the assistant turn's rendering when no prompt is given.
PLACEHOLDER_PROMPT = "Hello"


class PromptFormatter:
    """Renders prompts and responses as text and token ids under ``generation.prompt_format``.

    ``"chat"`` uses the tokenizer's chat template; any other string is a plain template with a
    ``{prompt}`` placeholder, after which the response is followed by the EOS token.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        prompt_format: str = CHAT,
        system_prompt: str | None = None,
        truncation: str = PROMPT,
    ) -> None:
        if prompt_format == CHAT and not getattr(tokenizer, "chat_template", None):
            raise ConfigError(
                "generation.prompt_format='chat' needs a tokenizer with a chat template, and "
                f"{type(tokenizer).__name__} ({tokenizer.name_or_path!r}) has none; set "
                f"generation.prompt_format to a template such as '{EXAMPLE_TEMPLATE}'"
            )
        if prompt_format != CHAT and "{prompt}" not in prompt_format:
            raise ConfigError(
                f"generation.prompt_format={prompt_format!r} must be 'chat' or a template "
                "containing '{prompt}'"
            )
        if prompt_format != CHAT and tokenizer.eos_token is None:
            raise ConfigError(
                f"generation.prompt_format={prompt_format!r} ends responses with the EOS token, "
                "but the tokenizer has no eos_token"
            )
        self.tokenizer = tokenizer
        self.prompt_format = prompt_format
        if truncation not in (PROMPT, PAIR):
            raise ConfigError(f"model.truncation={truncation!r}; expected one of {[PROMPT, PAIR]}")
        self.system_prompt = system_prompt
        self.truncation = truncation
        # Token counts of the responses :meth:`encode_pair` cut to fit model.max_length,
        # since the last :meth:`report_cuts`.
        self.cut_lengths: list[int] = []

    def _turns(self, prompt: str) -> list[dict[str, str]]:
        """The chat turns before the response: the system turn when one is configured (an
        empty one counts: zephyr-7b-sft-full was trained with it), then the user turn."""
        system = (
            []
            if self.system_prompt is None
            else [{"role": "system", "content": self.system_prompt}]
        )
        return [*system, {"role": "user", "content": prompt}]

    def prompt_text(self, prompt: str) -> str:
        """The exact text generation feeds to the model."""
        if self.prompt_format == CHAT:
            return self.tokenizer.apply_chat_template(
                self._turns(prompt), add_generation_prompt=True, tokenize=False
            )
        # str.replace rather than str.format: user templates may contain other braces.
        return self.prompt_format.replace("{prompt}", prompt)

    def response_text(self, response: str, prompt: str = PLACEHOLDER_PROMPT) -> str:
        """What follows ``prompt_text(prompt)`` in training; generated responses (decoded
        without special tokens) pass through here exactly like real ones."""
        if self.prompt_format != CHAT:
            return response + self.tokenizer.eos_token
        head = self.prompt_text(prompt)
        full = self.tokenizer.apply_chat_template(
            [*self._turns(prompt), {"role": "assistant", "content": response}], tokenize=False
        )
        if not full.startswith(head):
            raise ConfigError(
                "the chat template renders the user turn differently with and without an "
                "assistant reply, so the prompt/response boundary is ambiguous; set "
                f"generation.prompt_format to a plain template such as '{EXAMPLE_TEMPLATE}'"
            )
        return full[len(head) :]

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def prompt_ids(self, prompt: str, max_prompt_length: int) -> list[int]:
        """The token ids of ``prompt_text(prompt)`` that generation feeds: an over-long prompt
        loses its beginning (the question sits at the end); under ``truncation="pair"`` no
        prompt is cut for generation, as the official generation script cuts none."""
        ids = self._ids(self.prompt_text(prompt))
        if self.truncation == PAIR:
            return ids
        return ids[max(0, len(ids) - max_prompt_length) :]

    def check_lengths(
        self, prompts: Sequence[str], max_prompt_length: int, overflow: str, source: str
    ) -> int:
        """How many ``prompts`` exceed ``max_prompt_length`` tokens once formatted.

        With ``overflow="reject"`` the first one raises :class:`DataError` naming its record
        (position in ``source``); with ``"truncate"`` they are counted in one warning, since
        cutting a prompt can remove what the response answers.
        """
        if overflow not in (TRUNCATE, REJECT):
            raise ConfigError(
                f"model.prompt_overflow={overflow!r}; expected one of {[TRUNCATE, REJECT]}"
            )
        too_long = []
        for index, prompt in enumerate(prompts):
            length = len(self._ids(self.prompt_text(prompt)))
            if length <= max_prompt_length:
                continue
            if overflow == REJECT:
                raise DataError(
                    f"{source} record {index} (prompt {prompt[:40]!r}...): {length} tokens once "
                    f"formatted, expected at most model.max_prompt_length={max_prompt_length} "
                    "(model.prompt_overflow=reject); raise model.max_prompt_length or set "
                    "model.prompt_overflow=truncate to keep the prompt's last tokens"
                )
            too_long.append(length)
        if too_long:
            log.warning(
                "%d of %d %s prompts are longer than model.max_prompt_length=%d tokens (the "
                "longest %d); generation and training keep their last %d tokens "
                "(model.prompt_overflow=truncate)",
                len(too_long),
                len(prompts),
                source,
                max_prompt_length,
                max(too_long),
                max_prompt_length,
            )
        return len(too_long)

    def report_cuts(self, what: str, total: int, max_length: int) -> None:
        """Say in one counted warning how many of ``total`` ``what`` responses were cut to
        fit ``max_length`` tokens since the last report: a cut response trains and scores a
        different answer than the data holds."""
        if self.cut_lengths:
            log.warning(
                "%d of %d %s responses are longer than model.max_length=%d tokens with their "
                "prompt (the longest %d tokens alone) and were cut to fit",
                len(self.cut_lengths),
                total,
                what,
                max_length,
                max(self.cut_lengths),
            )
        self.cut_lengths = []

    def encode(
        self, prompt: str, response: str, max_prompt_length: int, max_length: int
    ) -> dict[str, list[int]]:
        """Token ids of prompt + response and a mask that is 1 exactly on the response tokens
        (:meth:`encode_pair` with one response)."""
        return self.encode_pair(prompt, [response], max_prompt_length, max_length)[0]

    def encode_pair(
        self, prompt: str, responses: Sequence[str], max_prompt_length: int, max_length: int
    ) -> list[dict[str, list[int]]]:
        """Each of ``responses`` after ``prompt`` as token ids and a response mask.

        The prompt and the responses are tokenised separately so the boundary is exact.
        ``truncation="prompt"``: the prompt is cut by :meth:`prompt_ids` and each response
        loses its end where prompt + response exceed ``max_length``. ``"pair"`` (the official
        code): the prompt keeps its last ``max_prompt_length`` tokens only when it and the
        longest response exceed ``max_length``, and if they still do, every response keeps
        its first ``max_length - max_prompt_length`` tokens.
        """
        full = self._ids(self.prompt_text(prompt))
        answers = full_answers = [self._ids(self.response_text(r, prompt)) for r in responses]
        if self.truncation == PAIR:
            longest = max(len(a) for a in answers)
            if len(full) + longest > max_length:
                full = full[-max_prompt_length:]
            budget = max_length - max_prompt_length
            if len(full) + longest > max_length:
                answers = [a[:budget] for a in answers]
        else:
            full = full[max(0, len(full) - max_prompt_length) :]
            answers = [a[: max(max_length - len(full), 0)] for a in answers]
        pairs = zip(full_answers, answers, strict=True)
        self.cut_lengths += [len(whole) for whole, kept in pairs if len(kept) < len(whole)]
        if not all(answers):
            raise DataError(
                f"no response token fits: prompt uses {len(full)} of model.max_length="
                f"{max_length} tokens (model.max_prompt_length={max_prompt_length} must be "
                "smaller than model.max_length), or the response is empty"
            )
        return [
            {"input_ids": full + a, "response_mask": [0] * len(full) + [1] * len(a)}
            for a in answers
        ]
