"""The one prompt format shared by self-play generation and training.

The official SPIN code generates with one prompt format and trains with another, so the
model is trained on text it never produced. Here both sides go through one
:class:`PromptFormatter`: generation feeds ``prompt_text(p)`` to the model and training
scores ``prompt_text(p) + response_text(y)``, for real and generated ``y`` alike.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

CHAT = "chat"
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

    def encode(
        self, prompt: str, response: str, max_prompt_length: int, max_length: int
    ) -> dict[str, list[int]]:
        """Token ids of prompt + response and a mask that is 1 exactly on the response tokens.

        The two parts are tokenised separately so the boundary is exact. Over-long prompts
        lose their beginning (the question sits at the end); over-long responses lose their end.
        """
        prompt_ids = self._ids(self.prompt_text(prompt))
        prompt_ids = prompt_ids[max(0, len(prompt_ids) - max_prompt_length) :]
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
