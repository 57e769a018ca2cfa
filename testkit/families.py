"""Tiny stand-ins of the model families, as job-spec pieces: the one source of their configs.

Read by tests/support/models.py (the tests' ``TINY_MODELS`` table), by the model-writing
scripts that run in the torch environment (tests/support/make_models.py) and by the
benchmarks (bench/toolchains.py, bench/precisions.py). Stdlib only: the toolchain
interpreters import it too.
"""

from __future__ import annotations

from typing import Any

# torchvision.models.VisionTransformer: 32x32 images, two layers.
VIT_TINY: dict[str, Any] = {
    "image_size": 32,
    "patch_size": 8,
    "num_layers": 2,
    "num_heads": 2,
    "hidden_dim": 32,
    "mlp_dim": 64,
    "num_classes": 10,
}
# transformers.BertModel and GPT2LMHeadModel configs (a vocabulary of 100 tokens).
BERT_TINY: dict[str, Any] = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "vocab_size": 100,
    "max_position_embeddings": 64,
}
GPT2_TINY: dict[str, Any] = {"n_embd": 32, "n_layer": 2, "n_head": 2, "vocab_size": 100, "n_positions": 64}
TOKENS: dict[str, Any] = {"name": "input_ids", "shape": ["batch", 8], "dtype": "int64", "range": [0, 100]}
MASK: dict[str, Any] = {"name": "attention_mask", "shape": ["batch", 8], "dtype": "int64", "range": [0, 2]}
# The one-layer ViT of the onnx-tf attention chain (tests/stages/test_attention_chain.py).
VIT_ONE_LAYER: dict[str, Any] = {**VIT_TINY, "num_layers": 1}
