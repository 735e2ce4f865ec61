"""Independent reference for the frozen-LM test (tests/lm_minilm.rs).

A plain-numpy BERT forward pass (no candle, no torch) over all-MiniLM-L6-v2, written from the
BERT paper / Hugging Face `modeling_bert.py` semantics: word + position + token-type embeddings,
LayerNorm, then post-LN transformer layers with erf-GELU. It writes every hidden state
(embedding output + each layer) for a few fixed sentences to minilm_golden.safetensors
and the sentences to minilm_golden.json.

Regenerate (needs numpy, safetensors, tokenizers from PyPI and the fetched MiniLM assets):
    python tests/data/minilm_golden.py "$LQAE_CACHE/minilm"   # default ~/.cache/lqae/minilm
"""
import json
import math
import os
import sys

import numpy as np
from safetensors.numpy import load_file, save_file
from tokenizers import Tokenizer

SENTENCES = [
    "A photo of a sneaker on a white background.",
    "Language models quantize images into words!",
    "unbelievably tokenised: ##pieces, [MASK] and numbers 12345",
]

model_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.environ.get("LQAE_CACHE", os.path.expanduser("~/.cache/lqae")), "minilm")
cfg = json.load(open(os.path.join(model_dir, "config.json")))
w = load_file(os.path.join(model_dir, "model.safetensors"))
w = {k: v.astype(np.float64) for k, v in w.items()}
tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
tok.no_padding()
tok.no_truncation()
eps = cfg["layer_norm_eps"]
heads = cfg["num_attention_heads"]
erf = np.vectorize(math.erf)


def ln(x, p):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w[p + ".weight"] + w[p + ".bias"]


def lin(x, p):
    return x @ w[p + ".weight"].T + w[p + ".bias"]


def gelu(x):
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


out = {}
for i, s in enumerate(SENTENCES):
    ids = np.array(tok.encode(s).ids, dtype=np.int64)
    n = len(ids)
    h = (w["embeddings.word_embeddings.weight"][ids]
         + w["embeddings.position_embeddings.weight"][:n]
         + w["embeddings.token_type_embeddings.weight"][0])
    h = ln(h, "embeddings.LayerNorm")
    states = [h]
    for l in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{l}."
        d = h.shape[-1] // heads
        q = lin(h, p + "attention.self.query").reshape(n, heads, d).transpose(1, 0, 2)
        k = lin(h, p + "attention.self.key").reshape(n, heads, d).transpose(1, 0, 2)
        v = lin(h, p + "attention.self.value").reshape(n, heads, d).transpose(1, 0, 2)
        a = q @ k.transpose(0, 2, 1) / math.sqrt(d)
        a = np.exp(a - a.max(-1, keepdims=True))
        a = a / a.sum(-1, keepdims=True)
        ctx = (a @ v).transpose(1, 0, 2).reshape(n, heads * d)
        h = ln(lin(ctx, p + "attention.output.dense") + h, p + "attention.output.LayerNorm")
        f = gelu(lin(h, p + "intermediate.dense"))
        h = ln(lin(f, p + "output.dense") + h, p + "output.LayerNorm")
        states.append(h)
    out[f"ids_{i}"] = ids
    out[f"hidden_{i}"] = np.stack(states).astype(np.float32)

here = os.path.dirname(os.path.abspath(__file__))
save_file(out, os.path.join(here, "minilm_golden.safetensors"))
json.dump({"sentences": SENTENCES}, open(os.path.join(here, "minilm_golden.json"), "w"), indent=1)
print("wrote", {k: v.shape for k, v in out.items()})
