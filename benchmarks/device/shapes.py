"""Models of the real architectures with random weights, built from their configs in code.

The speed runs need the shapes of SmolLM2-135M/360M/1.7B and Mistral-7B, not their weights
(a matrix multiply costs the same whatever it holds), and no checkpoint can travel to an
offline node. With ``toy`` (``check.sh --cpu``) every shape shrinks to two narrow layers and
the tiny model's character tokenizer, so the same code runs on a CPU in seconds.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from spin.models import build_tiny_tokenizer

KIT_TOKENIZER = Path(__file__).resolve().parent / "kit" / "tokenizer"
# The published configs' shapes (hidden size, MLP width, layers, attention and key/value
# heads, tied embeddings); the vocabulary is the tokenizer's (Mistral's own is 32000, so
# its shape here has a 2% larger embedding and head).
ARCHITECTURES = {
    "smollm2-135m": ("llama", 576, 1536, 30, 9, 3, True),
    "smollm2-360m": ("llama", 960, 2560, 32, 15, 5, True),
    "smollm2-1.7b": ("llama", 2048, 8192, 24, 32, 32, True),
    "mistral-7b": ("mistral", 4096, 14336, 32, 32, 8, False),
}
TOY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}


def tokenizer(toy: bool):
    """SmolLM2's tokenizer from the kit (``make device-kit``), or the tiny one for toys;
    left-padded with a pad token, as :func:`spin.models.load_model` prepares one."""
    if toy:
        return build_tiny_tokenizer()
    if not (KIT_TOKENIZER / "tokenizer.json").is_file():
        raise FileNotFoundError(
            f"{KIT_TOKENIZER} holds no tokenizer: run `make device-kit` where the network is"
        )
    loaded = AutoTokenizer.from_pretrained(KIT_TOKENIZER)
    loaded.pad_token = loaded.pad_token or loaded.eos_token
    loaded.padding_side = "left"
    return loaded


def config(name: str, vocab_size: int, toy: bool = False):
    """The transformers config of architecture ``name`` (or its two-layer toy)."""
    model_type, hidden, mlp, layers, heads, kv_heads, tied = ARCHITECTURES[name]
    fields = {
        "hidden_size": hidden,
        "intermediate_size": mlp,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "tie_word_embeddings": tied,
        "vocab_size": vocab_size,
        "max_position_embeddings": 4096,
    }
    if toy:
        fields |= TOY | {"num_attention_heads": 4, "num_key_value_heads": 2}
    return AutoConfig.for_model(model_type, **fields)


def random_model(name: str, tok, device: torch.device, dtype: torch.dtype, toy: bool = False):
    """Architecture ``name`` with seeded random weights, built on ``device`` directly (a 7B
    model initialised on the CPU first would take minutes)."""
    cfg = config(name, len(tok), toy)
    cfg.pad_token_id, cfg.eos_token_id = tok.pad_token_id, tok.eos_token_id
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    return model


def parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
