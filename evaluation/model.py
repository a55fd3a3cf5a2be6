"""The model lm-eval scores: the chain's loaded model and tokenizer behind lm-eval's HFLM,
with the project's system turn, its own held-out token ids, and continuation scoring that
projects only the scored positions onto the vocabulary (:mod:`evaluation.continuations`)."""

from __future__ import annotations

from functools import partial
from typing import Any

from lm_eval.models.huggingface import HFLM
from lm_eval.models.utils import (
    Collator,
    handle_stop_sequences,
    normalize_gen_kwargs,
    postprocess_generated_text,
)
from tqdm.auto import tqdm

from evaluation.continuations import answer, continuation_logprobs, window
from evaluation.decoding import generation_eos_ids, greedy_altered, greedy_until, is_plain_greedy
from evaluation.heldout import given_ids
from evaluation.lm_eval_adapter import eos_not_a_stop

# A loglikelihood request as HFLM's ``_loglikelihood_tokens`` takes it: its strings (the
# cache key, None for rolling windows), context token ids, continuation token ids.
Request = tuple[tuple[str, str] | None, list[int], list[int]]


class LoadedModel(HFLM):
    """HFLM around a model object, rendering the configured system turn.

    Its model info asks the hub for a commit hash of ``pretrained``, which for a model
    object is no hub id: a network call that cannot succeed. lm-eval drops an empty system
    instruction (a falsy string), whereas a model trained with an empty system turn (as
    zephyr-7b-sft-full was) should be scored with one: the turn is added here to every chat
    history that lacks one.

    A held-out NLL document (:mod:`evaluation.heldout`), and each choice of an exact-world
    document (:mod:`evaluation.exact`), carries the token ids the chain
    trains on, and those are scored as they are: lm-eval's own encoding would tokenise the
    prompt text again and move its trailing whitespace (a chat template's newline after the
    assistant header) into the response, scoring a token training never scores.

    With ``eos_stop=False`` a generative task stops at its own stop sequences alone, as
    lm-eval 0.4.0 did: lm-eval now adds the EOS token's text to them.

    Loglikelihood requests are batched as HFLM batches them (longest first, lm-eval's
    ``Collator``, its one-token cache included) but scored only at the continuation's
    positions (:func:`evaluation.continuations.continuation_logprobs`): the same answers
    without HFLM's vocabulary-wide log-softmax over every position of the batch. Greedy
    generation requests are batched and encoded as HFLM does but decoded by a loop that
    drops each row as it finishes (:mod:`evaluation.decoding`); anything else (sampling, a
    model whose generation config changes greedy choices) goes to HFLM's ``generate``.
    """

    def __init__(
        self,
        *args: Any,
        system_prompt: str | None = None,
        eos_stop: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.system_prompt = system_prompt
        self.eos_stop = eos_stop

    def get_model_info(self) -> dict[str, Any]:
        return {
            "model_num_parameters": self.model.num_parameters(),
            "model_dtype": str(self.model.dtype),
        }

    def apply_chat_template(
        self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        if self.system_prompt is not None and chat_history[0]["role"] != "system":
            chat_history = [{"role": "system", "content": self.system_prompt}, *chat_history]
        return super().apply_chat_template(chat_history, add_generation_prompt)

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        settings = [normalize_gen_kwargs(r.args[1], self.max_gen_toks) for r in requests]
        if all(is_plain_greedy(s) for s in settings) and not greedy_altered(self.model):
            return self._greedy_until(requests, disable_tqdm)
        return self.generate_with_hf(requests, disable_tqdm)

    def generate_with_hf(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """HFLM's own ``generate_until`` (transformers' ``generate``), with the EOS stop as
        configured."""
        if self.eos_stop:
            return super().generate_until(requests, disable_tqdm)
        with eos_not_a_stop():
            return super().generate_until(requests, disable_tqdm)

    def _greedy_until(self, requests: list[Any], disable_tqdm: bool) -> list[str]:
        """HFLM's ``generate_until`` for greedy requests, its batches and token ids, decoded
        by :func:`evaluation.decoding.greedy_until`, which drops rows as they finish."""
        order = Collator(
            [r.args for r in requests],
            sort_fn=lambda args: (-len(self.tok_encode(args[0])), args[0]),
            group_by="gen_kwargs",
            group_fn=lambda args: args[1],
        )
        eos_text = self.tok_decode(self.eot_token_id, skip_special_tokens=False)
        eos_ids = generation_eos_ids(self.model)
        bar = tqdm(
            total=len(requests),
            disable=disable_tqdm or self.rank != 0,
            desc="Running generate_until requests",
        )
        texts = []
        for chunk in order.get_batched(n=self.batch_size):
            contexts = [context for context, _ in chunk]
            settings = normalize_gen_kwargs(chunk[0][1], self.max_gen_toks)
            until = handle_stop_sequences(settings["until"], eos_text if self.eos_stop else None)
            budget = settings["max_gen_toks"]
            encoded, mask = self.tok_batch_encode(
                contexts, left_truncate_len=self.max_length - budget, truncation=self.truncation
            )
            prompts = [
                [token for token, on in zip(row, kept, strict=True) if on]
                for row, kept in zip(encoded.tolist(), mask.tolist(), strict=True)
            ]
            generated = greedy_until(
                self.model,
                prompts,
                budget,
                until,
                partial(self.tok_decode, skip_special_tokens=False),
                eos_ids,
                self.tokenizer.pad_token_id,
            )
            for tokens in generated:
                texts.append(postprocess_generated_text(self.tok_decode(tokens), until, None))
                bar.update(1)
        bar.close()
        return order.get_original(texts)

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        ids = {i: given_ids(req.doc, req.idx) for i, req in enumerate(requests)}
        heldout = [i for i, given in ids.items() if given is not None]
        if not heldout:
            return super().loglikelihood(requests, disable_tqdm)
        others = sorted(set(range(len(requests))) - set(heldout))
        encoded = [(requests[i].args, *ids[i]) for i in heldout]
        results = dict(zip(heldout, self._loglikelihood_tokens(encoded, disable_tqdm), strict=True))
        if others:
            rest = super().loglikelihood([requests[i] for i in others], disable_tqdm)
            results |= dict(zip(others, rest, strict=True))
        return [results[i] for i in range(len(requests))]

    def _loglikelihood_tokens(
        self,
        requests: list[Request],
        disable_tqdm: bool = False,
        override_bs: int | None = None,
    ) -> list[tuple[float, bool]]:
        order = Collator(
            requests,
            sort_fn=_longest_first,
            group_by="contexts" if self.logits_cache else None,
            group_fn=_all_but_last_token,
        )
        batch_size = override_bs if override_bs is not None else self.batch_size
        bar = tqdm(
            total=len(requests),
            disable=disable_tqdm or self.rank != 0,
            desc="Running loglikelihood requests",
        )
        answers = []
        for chunk in order.get_batched(n=batch_size):
            windows = [window(context, cont, self.max_length) for _, context, cont in chunk]
            rows = continuation_logprobs(
                self.model,
                windows,
                self.tokenizer.pad_token_id,
                self.mixed_precision_dtype,
                self.softmax_dtype,
            )
            for (key, context, cont), logprobs in zip(chunk, rows, strict=True):
                for key_, cont_, logprobs_ in order.get_cache(
                    req_str=key, cxt_toks=context, cont_toks=cont, logits=logprobs[None]
                ):
                    result = answer(logprobs_[0], cont_)
                    answers.append(result)
                    if key_ is not None:
                        self.cache_hook.add_partial("loglikelihood", key_, result)
                    bar.update(1)
        bar.close()
        return order.get_original(answers)


def _longest_first(request: Request) -> tuple[int, tuple[int, ...]]:
    """HFLM's order: longest input first, so a batch's first row sets its length."""
    tokens = request[1] + request[2]
    return -len(tokens), tuple(tokens)


def _all_but_last_token(request: Request) -> list[int]:
    """HFLM's one-token cache key: requests that differ only in their last token share a
    forward pass."""
    return request[1] + request[2][:-1]
