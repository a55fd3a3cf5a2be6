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

from spin.data.loaders import DataError

log = logging.getLogger(__name__)

CHAT = "chat"
# model.prompt_overflow: what happens to a prompt longer than model.max_prompt_length.
TRUNCATE, REJECT = "truncate", "reject"
EXAMPLE_TEMPLATE = "### Instruction: {prompt}\\n\\n### Response: "
# A stand-in prompt for deriving the assistant turn's rendering when no prompt is given.
PLACEHOLDER_PROMPT = "Hello"


class PromptFormatter:
    """Renders prompts and responses as text and token ids under ``generation.prompt_format``.

    ``"chat"`` uses the tokenizer's chat template; any other string is a plain template with a
    ``{prompt}`` placeholder, after which the response is followed by the EOS token.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, prompt_format: str = CHAT) -> None:
        if prompt_format == CHAT and not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                "generation.prompt_format='chat' needs a tokenizer with a chat template, and "
                f"{type(tokenizer).__name__} ({tokenizer.name_or_path!r}) has none; set "
                f"generation.prompt_format to a template such as '{EXAMPLE_TEMPLATE}'"
            )
        if prompt_format != CHAT and "{prompt}" not in prompt_format:
            raise ValueError(
                f"generation.prompt_format={prompt_format!r} must be 'chat' or a template "
                "containing '{prompt}'"
            )
        if prompt_format != CHAT and tokenizer.eos_token is None:
            raise ValueError(
                f"generation.prompt_format={prompt_format!r} ends responses with the EOS token, "
                "but the tokenizer has no eos_token"
            )
        self.tokenizer = tokenizer
        self.prompt_format = prompt_format

    def prompt_text(self, prompt: str) -> str:
        """The exact text generation feeds to the model."""
        if self.prompt_format == CHAT:
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
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
            [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}],
            tokenize=False,
        )
        if not full.startswith(head):
            raise ValueError(
                "the chat template renders the user turn differently with and without an "
                "assistant reply, so the prompt/response boundary is ambiguous; set "
                f"generation.prompt_format to a plain template such as '{EXAMPLE_TEMPLATE}'"
            )
        return full[len(head) :]

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def prompt_ids(self, prompt: str, max_prompt_length: int) -> list[int]:
        """The token ids of ``prompt_text(prompt)`` that generation feeds and training scores:
        an over-long prompt loses its beginning (the question sits at the end)."""
        ids = self._ids(self.prompt_text(prompt))
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
            raise ValueError(
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

    def encode(
        self, prompt: str, response: str, max_prompt_length: int, max_length: int
    ) -> dict[str, list[int]]:
        """Token ids of prompt + response and a mask that is 1 exactly on the response tokens.

        The two parts are tokenised separately so the boundary is exact. Over-long prompts
        are cut by :meth:`prompt_ids`; over-long responses lose their end.
        """
        prompt_ids = self.prompt_ids(prompt, max_prompt_length)
        budget = max_length - len(prompt_ids)
        response_ids = self._ids(self.response_text(response, prompt))[: max(budget, 0)]
        if not response_ids:
            raise ValueError(
                f"no response token fits: prompt uses {len(prompt_ids)} of model.max_length="
                f"{max_length} tokens (model.max_prompt_length={max_prompt_length} must be "
                "smaller than model.max_length), or the response is empty"
            )
        return {
            "input_ids": prompt_ids + response_ids,
            "response_mask": [0] * len(prompt_ids) + [1] * len(response_ids),
        }
