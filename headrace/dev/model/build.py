"""Deterministic builders for small CTranslate2 decoder models (no torch needed).

``build_dev_model`` embeds a smoothed token-bigram model of the bundled corpus in a
2-layer transformer whose layers are near-identity, so greedy/sampled output looks
vaguely like the corpus.  ``build_random_model`` writes a GPT-2 shaped model with random
weights for benchmarks.  Both write a CTranslate2 model directory plus ``tokenizer.json``;
the dev model also a ``tokenizer_config.json`` with a chat template.

Only ``ctranslate2.specs`` is used, imported lazily inside the functions: it is a
build-time dependency; the runtime ``import ctranslate2`` lives in worker/engine.py.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from headrace.dev.model.tokenizer import (
    EOS_ID,
    EOS_TOKEN,
    corpus_paragraphs,
    ends_incomplete,
    pad_tokenizer,
    token_bytes,
    train_tokenizer,
    valid_text,
    vocabulary,
)

if TYPE_CHECKING:
    F32 = npt.NDArray[np.float32]
    F64 = npt.NDArray[np.float64]

DEV_MODEL_NAME = "headrace-tiny"

_DEV_VOCAB = 1536
_DEV_D_MODEL = 256
_DEV_LAYERS = 2
_DEV_HEADS = 4
_DEV_FFN = 512
# Down-weighting (in the unigram back-off) of tokens that are not valid UTF-8 alone.
_BROKEN_PENALTY = 1e-3
# <|endoftext|> follows 27% of "." in the corpus, which would make greedy decoding stop
# after one sentence; scaled down it is never the greedy choice but sampling still ends.
_EOS_FACTOR = 0.25


def artifact_digest(model_dir: Path) -> str:
    """sha256 over the sorted relative paths and contents of all files in ``model_dir``."""
    digest = hashlib.sha256()
    root = Path(model_dir)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        digest.update(path.relative_to(root).as_posix().encode("utf-8") + b"\0")
        digest.update(len(data).to_bytes(8, "little") + data)
    return digest.hexdigest()


def build_dev_model(out_dir: Path, *, seed: int = 0) -> Path:
    """Build the tiny bigram-in-a-transformer dev model into ``out_dir`` and return it.

    Same seed => byte-identical files.  The seed only changes the (negligible) noise in
    the transformer layers; the bigram part is fully determined by the corpus.
    """
    paragraphs = corpus_paragraphs()
    tokenizer = train_tokenizer(_DEV_VOCAB, paragraphs)
    tokens = vocabulary(tokenizer)
    logits, context_counts = _bigram_logits(tokenizer, paragraphs, tokens)
    embed, out_w, out_b = _factorize(logits, np.sqrt(context_counts + 1.0), _DEV_D_MODEL)
    rng = np.random.default_rng(seed)
    # Rotary attention: no position table, so there is no hard context-length limit.
    spec = _decoder_spec(_DEV_LAYERS, _DEV_HEADS, rotary=True)
    dec = spec.decoder
    dec.scale_embeddings = False
    dec.embeddings.weight = embed
    _layer_norm(dec.layer_norm, _DEV_D_MODEL)
    dec.projection.weight = out_w
    dec.projection.bias = out_b
    for layer in dec.layer:
        _fill_layer(layer, rng, _DEV_D_MODEL, _DEV_FFN, out_scale=1e-4)
    model_dir = _save(spec, tokenizer, tokens, Path(out_dir), quantization=None)
    _write_tokenizer_config(model_dir)
    return model_dir


# The dev model's chat template (Hugging Face's convention: `chat_template` in
# tokenizer_config.json, Jinja2). Small, but it uses what real ones do: the begin and end tokens,
# raise_exception, add_generation_prompt. The corpus has no dialogue, so the answers read like
# the rest of its output.
DEV_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('roles are system, user and assistant') }}"
    "{% endif %}"
    "{{ message['role'] | capitalize }}: {{ message['content'] | trim }}\n"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def _write_tokenizer_config(model_dir: Path) -> None:
    config = {
        "bos_token": EOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "unk_token": EOS_TOKEN,
        "chat_template": DEV_CHAT_TEMPLATE,
    }
    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    (model_dir / "tokenizer_config.json").write_text(text, encoding="utf-8")


def build_random_model(
    out_dir: Path,
    *,
    num_layers: int = 12,
    d_model: int = 768,
    num_heads: int = 12,
    vocab_size: int = 50257,
    quantization: str | None = "int8",
    seed: int = 0,
) -> Path:
    """GPT-2 shaped model (learned positions, GELU, tied embeddings) with random weights.

    The tokenizer is the corpus BPE padded with filler tokens up to ``vocab_size``, so
    model vocabulary and tokenizer ids agree.  Supports at most 1024 positions.
    """
    if d_model % num_heads:
        raise ValueError("d_model must be divisible by num_heads")
    tokenizer = pad_tokenizer(train_tokenizer(vocab_size), vocab_size)
    tokens = vocabulary(tokenizer)
    rng = np.random.default_rng(seed)
    spec = _decoder_spec(num_layers, num_heads, rotary=False)
    dec = spec.decoder
    dec.scale_embeddings = False
    embed = _normal(rng, (vocab_size, d_model), 0.02)
    dec.embeddings.weight = embed
    dec.projection.weight = embed  # tied, as in GPT-2 (stored once via aliasing)
    dec.position_encodings.encodings = _normal(rng, (1024, d_model), 0.01)
    _layer_norm(dec.layer_norm, d_model)
    for layer in dec.layer:
        _fill_layer(layer, rng, d_model, 4 * d_model, out_scale=0.02)
    return _save(spec, tokenizer, tokens, Path(out_dir), quantization=quantization)


# --------------------------------------------------------------------------- bigram


def _bigram_logits(
    tokenizer: Tokenizer, paragraphs: list[str], tokens: list[str]
) -> tuple[F64, F64]:
    """Witten-Bell smoothed bigram log-probabilities as a V x V matrix (row = context),
    and how often each token occurs as a context.

    The back-off is an add-0.5 unigram in which tokens that are not valid UTF-8 on
    their own are scaled down by ``_BROKEN_PENALTY`` (rare, never impossible).  Contexts
    ending in an incomplete UTF-8 sequence trust their observed continuations.
    """
    size = len(tokens)
    seq = [EOS_ID]
    for enc in tokenizer.encode_batch(paragraphs):
        seq.extend([*enc.ids, EOS_ID])
    ids = np.asarray(seq, dtype=np.int64)
    counts = np.zeros((size, size), dtype=np.float64)
    np.add.at(counts, (ids[:-1], ids[1:]), 1.0)

    raw = [token_bytes(t) if i != EOS_ID else b"" for i, t in enumerate(tokens)]
    broken = np.array([not valid_text(b) for b in raw])
    dangling = np.array([ends_incomplete(b) for b in raw])
    prior = np.bincount(ids[1:], minlength=size) + 0.5
    prior[broken] *= _BROKEN_PENALTY
    prior /= prior.sum()

    total = counts.sum(axis=1)
    types = (counts > 0).sum(axis=1)
    lam = np.where(total > 0, total / np.maximum(total + types, 1.0), 0.0)
    lam = np.where(dangling & (total > 0), 0.999, lam)
    ml = counts / np.maximum(total, 1.0)[:, None]
    probs = lam[:, None] * ml + (1.0 - lam)[:, None] * prior[None, :]
    probs[:, EOS_ID] *= _EOS_FACTOR
    probs[EOS_ID, EOS_ID] *= 1e-3  # an empty completion from a bare prompt should be rare
    probs /= probs.sum(axis=1, keepdims=True)
    return np.log(probs), total


def _factorize(logits: F64, row_weights: F64, d_model: int) -> tuple[F32, F32, F32]:
    """Rank-(d_model - 2) factorization of ``logits`` that survives the final LayerNorm.

    The truncated SVD is weighted by ``row_weights`` so frequent contexts fit better.

    Returns (embeddings, projection weight, projection bias) with
    ``LayerNorm(embeddings[x]) @ projection.T + bias ~= logits[x] + const(x)``.
    Embedding rows live in a subspace orthogonal to the all-ones vector (so the mean
    subtraction is a no-op) and all have the same norm sqrt(d_model) (a padding
    coordinate absorbs the difference), so LayerNorm leaves them unchanged.
    """
    rank = d_model - 2
    bias = logits.mean(axis=0)
    centered = logits - bias
    centered -= centered.mean(axis=1, keepdims=True)  # row shifts do not change softmax
    u, s, vt = _truncated_svd(centered * row_weights[:, None], rank)
    u = u / row_weights[:, None]
    # Canonical signs: largest-magnitude entry of each right singular vector positive.
    signs = np.sign(vt[np.arange(rank), np.abs(vt).argmax(axis=1)])
    u, vt = u * signs, vt * signs[:, None]
    left = u * np.sqrt(s)
    right = vt.T * np.sqrt(s)
    norms = np.linalg.norm(left, axis=1)
    radius = float(norms.max()) * 1.01
    pad = np.sqrt(radius**2 - norms**2)[:, None]
    scale = np.sqrt(d_model) / radius
    left = np.hstack([left, pad]) * scale
    right = np.hstack([right, np.zeros((right.shape[0], 1))]) / scale
    basis = _zero_sum_basis(d_model, rank + 1)
    return (
        _f32(left @ basis.T),
        _f32(right @ basis.T),
        _f32(bias - bias.mean()),
    )


def _truncated_svd(matrix: F64, rank: int) -> tuple[F64, F64, F64]:
    """Top-``rank`` SVD by randomized range finding (Halko et al.), much faster than a
    full SVD; the sketch uses a fixed seed so the result does not depend on the caller."""
    sketch = np.random.default_rng(0).standard_normal((matrix.shape[1], rank + 32))
    basis = _orthonormalize(matrix @ sketch)
    for _ in range(2):  # power iterations sharpen the spectrum
        basis = _orthonormalize(matrix @ _orthonormalize(matrix.T @ basis))
    u, s, vt = np.linalg.svd(basis.T @ matrix, full_matrices=False)
    return (basis @ u)[:, :rank], s[:rank], vt[:rank]


def _orthonormalize(columns: F64) -> F64:
    """Cholesky-QR: cheap for tall, well-conditioned blocks (used instead of np.linalg.qr)."""
    chol = np.linalg.cholesky(columns.T @ columns)
    result: F64 = np.linalg.solve(chol, columns.T).T
    return result


def _zero_sum_basis(dim: int, count: int) -> F64:
    """``count`` orthonormal DCT-II vectors in R^dim, all orthogonal to (1, ..., 1)."""
    n = np.arange(dim)[:, None] + 0.5
    k = np.arange(1, count + 1)[None, :]
    basis: F64 = np.sqrt(2.0 / dim) * np.cos(np.pi * n * k / dim)
    return basis


def _f32(array: F64) -> F32:
    # Round to float16 precision: makes the bytes robust to last-ulp BLAS differences.
    result: F32 = array.astype(np.float16).astype(np.float32)
    if not np.isfinite(result).all():
        raise ValueError("weight out of float16 range")
    return result


# --------------------------------------------------------------------------- specs


def _decoder_spec(num_layers: int, num_heads: int, *, rotary: bool) -> Any:
    from ctranslate2 import specs  # build-time only (see module docstring)

    return specs.TransformerDecoderModelSpec.from_config(
        num_layers,
        num_heads,
        pre_norm=True,
        activation=specs.Activation.GELUTanh,
        rotary_dim=0 if rotary else None,
        rotary_interleave=False,
        # Explicit, or the config claims multi_query_attention (harmless but misleading).
        num_heads_kv=num_heads,
    )


def _normal(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> F32:
    result: F32 = rng.standard_normal(shape, dtype=np.float32) * np.float32(std)
    return result


def _layer_norm(spec: Any, dim: int) -> None:
    spec.gamma = np.ones(dim, dtype=np.float32)
    spec.beta = np.zeros(dim, dtype=np.float32)


def _fill_layer(
    layer: Any, rng: np.random.Generator, d_model: int, ffn: int, *, out_scale: float
) -> None:
    attn = layer.self_attention
    _layer_norm(attn.layer_norm, d_model)
    attn.linear[0].weight = _normal(rng, (3 * d_model, d_model), 0.02)
    attn.linear[0].bias = np.zeros(3 * d_model, dtype=np.float32)
    attn.linear[1].weight = _normal(rng, (d_model, d_model), out_scale)
    attn.linear[1].bias = np.zeros(d_model, dtype=np.float32)
    _layer_norm(layer.ffn.layer_norm, d_model)
    layer.ffn.linear_0.weight = _normal(rng, (ffn, d_model), 0.02)
    layer.ffn.linear_0.bias = np.zeros(ffn, dtype=np.float32)
    layer.ffn.linear_1.weight = _normal(rng, (d_model, ffn), out_scale)
    layer.ffn.linear_1.bias = np.zeros(d_model, dtype=np.float32)


def _save(
    spec: Any, tokenizer: Tokenizer, tokens: list[str], out_dir: Path, quantization: str | None
) -> Path:
    spec.register_vocabulary(tokens)
    for key in ("bos_token", "eos_token", "unk_token"):
        setattr(spec.config, key, EOS_TOKEN)
    spec.config.layer_norm_epsilon = 1e-5
    spec.validate()
    spec.optimize(quantization=quantization)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec.save(str(out_dir))
    (out_dir / "tokenizer.json").write_bytes((tokenizer.to_str(pretty=True) + "\n").encode())
    return out_dir
