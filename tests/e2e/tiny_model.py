"""Build a tiny random-weight Llama model and tokenizer that vLLM can serve on a CPU, with no hub access.

Run it as a script (``python tests/e2e/tiny_model.py OUT_DIR``), never import it from pytest: it imports torch
and transformers, which must stay out of the pytest process. The model has 2 layers, hidden size 64 and 2 heads
of size 32 (vLLM's CPU attention supports head sizes 32, 64, 80 and up, not 16); the tokenizer is a byte-level
BPE trained on the text below, so ``vocab_size`` is the tokenizer's size.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

_CORPUS = [
    "Eagle Eye watches the inference engine step by step and tells the router how busy each instance is.",
    "A router sends the next request to the engine with the shortest queue and the emptiest key-value cache.",
    "The quick brown fox jumps over the lazy dog while the scheduler batches tokens for every running request.",
    "Once upon a time there was a small language model that knew only a few hundred words and a lot of bytes.",
    "Observability means metrics, traces and logs: counters that grow, gauges that move, histograms of latency.",
    "Hello world. How are you today? I am fine, thank you. The weather is sunny and the servers are quiet.",
    "Numbers and symbols matter too: 0 1 2 3 4 5 6 7 8 9, plus + minus - times * and the colon : of chat turns.",
    "User: what is the capital of France? Assistant: Paris is the capital of France, a city on the river Seine.",
]

_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] }}: {{ message['content'] }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)

_SPECIAL_TOKENS = ["<s>", "</s>", "<unk>", "<pad>"]


def build(out_dir: Path) -> Path:
    """Write the model and tokenizer into ``out_dir`` and return it."""
    out_dir.mkdir(parents=True, exist_ok=True)

    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(_CORPUS * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        model_max_length=256,
    )
    tokenizer.chat_template = _CHAT_TEMPLATE
    tokenizer.save_pretrained(out_dir)

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        dtype="float32",
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(out_dir)
    return out_dir


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUT_DIR")
    print(build(Path(sys.argv[1])))
