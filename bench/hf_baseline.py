"""Hugging Face transformers `generate` on the same weights: what a user might run instead.

Runs in its own process, possibly another virtual environment (``--hf-python``), so it needs
only numpy, torch and transformers (``python -m bench.hf_baseline REQUEST.json RESULT.json``).
The weights are the CTranslate2 model's own: model.bin is read and its int8 matrices are
dequantized to float32 into a GPT-2 model. Batches of jobs sorted by prompt length, left
padded, greedy; an item's tokens past its own max_new_tokens are decoded but not counted.
"""

from __future__ import annotations

import importlib
import json
import struct
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.procinfo import peak_rss_mb

_DTYPES: list[Any] = [np.float32, np.int8, np.int16, np.int32, np.float16]


def read_ct2_model(path: Path) -> dict[str, Any]:
    """The variables of a CTranslate2 model.bin (format of ctranslate2.specs.ModelSpec.save)."""
    data = path.read_bytes()
    pos = 0

    def unpack(fmt: str) -> int:
        nonlocal pos
        (value,) = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return int(value)

    def string() -> str:
        nonlocal pos
        length = unpack("H")
        value = data[pos : pos + length - 1].decode()
        pos += length
        return value

    unpack("I")  # binary version
    string()  # spec name
    unpack("I")  # spec revision
    variables: dict[str, Any] = {}
    for _ in range(unpack("I")):
        name = string()
        shape = [unpack("I") for _ in range(unpack("B"))]
        dtype = np.dtype(_DTYPES[unpack("B")])
        size = unpack("I")
        array = np.frombuffer(data, dtype=dtype, count=size // dtype.itemsize, offset=pos)
        variables[name] = array.reshape(shape)
        pos += size
    for _ in range(unpack("I")):
        alias = string()
        variables[alias] = variables[string()]
    return variables


def _weight(variables: dict[str, Any], prefix: str) -> Any:
    weight = variables[f"{prefix}/weight"]
    scale = variables.get(f"{prefix}/weight_scale")
    if scale is None:
        return weight.astype(np.float32)
    return weight.astype(np.float32) / scale.astype(np.float32)[:, None]


def gpt2_state_dict(variables: dict[str, Any], num_layers: int) -> dict[str, Any]:
    """CTranslate2 decoder variables -> GPT2LMHeadModel state dict (Conv1D is [in, out])."""
    state = {
        "transformer.wte.weight": _weight(variables, "decoder/embeddings"),
        "transformer.wpe.weight": variables["decoder/position_encodings/encodings"],
        "transformer.ln_f.weight": variables["decoder/layer_norm/gamma"],
        "transformer.ln_f.bias": variables["decoder/layer_norm/beta"],
    }
    for i in range(num_layers):
        ct2, hf = f"decoder/layer_{i}", f"transformer.h.{i}"
        for ours, theirs in (
            ("self_attention/layer_norm", "ln_1"),
            ("ffn/layer_norm", "ln_2"),
        ):
            state[f"{hf}.{theirs}.weight"] = variables[f"{ct2}/{ours}/gamma"]
            state[f"{hf}.{theirs}.bias"] = variables[f"{ct2}/{ours}/beta"]
        for ours, theirs in (
            ("self_attention/linear_0", "attn.c_attn"),
            ("self_attention/linear_1", "attn.c_proj"),
            ("ffn/linear_0", "mlp.c_fc"),
            ("ffn/linear_1", "mlp.c_proj"),
        ):
            state[f"{hf}.{theirs}.weight"] = _weight(variables, f"{ct2}/{ours}").T.copy()
            state[f"{hf}.{theirs}.bias"] = variables[f"{ct2}/{ours}/bias"]
    state["lm_head.weight"] = state["transformer.wte.weight"]
    return state


class FirstStep:
    """A logits processor that notes when the first token of a batch is chosen."""

    def __init__(self) -> None:
        self.at: float | None = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self.at is None:
            self.at = time.perf_counter()
        return scores


def main(argv: list[str]) -> int:
    request = json.loads(Path(argv[0]).read_text())
    torch: Any = importlib.import_module("torch")
    transformers: Any = importlib.import_module("transformers")
    torch.set_num_threads(int(request["threads"]))
    shape = request["shape"]
    model_dir = Path(request["model_dir"])
    config = transformers.GPT2Config(
        vocab_size=shape["vocab_size"],
        n_positions=1024,
        n_embd=shape["d_model"],
        n_layer=shape["num_layers"],
        n_head=shape["num_heads"],
        activation_function="gelu_new",
        layer_norm_epsilon=1e-5,
        bos_token_id=0,
        eos_token_id=0,
    )
    model = transformers.GPT2LMHeadModel(config)
    variables = read_ct2_model(model_dir / "model.bin")
    state = {
        k: torch.from_numpy(np.array(v, dtype=np.float32))  # a writable copy
        for k, v in gpt2_state_dict(variables, shape["num_layers"]).items()
    }
    missing, unexpected = model.load_state_dict(state, strict=False)
    del variables, state
    model.eval()
    jobs = sorted(request["jobs"], key=lambda j: len(j["prompt_ids"]))
    size = int(request["batch_size"])
    timings: dict[int, dict[str, Any]] = {}
    t0 = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(jobs), size):
            batch = jobs[start : start + size]
            longest_prompt = max(len(j["prompt_ids"]) for j in batch)
            ids = torch.zeros((len(batch), longest_prompt), dtype=torch.long)
            mask = torch.zeros((len(batch), longest_prompt), dtype=torch.long)
            for row, job in enumerate(batch):  # left padding
                n = len(job["prompt_ids"])
                ids[row, longest_prompt - n :] = torch.tensor(job["prompt_ids"])
                mask[row, longest_prompt - n :] = 1
            new = max(j["max_new_tokens"] for j in batch)
            first = FirstStep()
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=new,
                min_new_tokens=new,
                do_sample=False,
                pad_token_id=0,
                logits_processor=transformers.LogitsProcessorList([first]),
            )
            done = time.perf_counter() - t0
            for row, job in enumerate(batch):
                timings[job["index"]] = {
                    "index": job["index"],
                    "tokens": job["max_new_tokens"],
                    "first_token_s": (first.at or t0) - t0,
                    "done_s": done,
                    "first_ids": out[row, longest_prompt : longest_prompt + 8].tolist(),
                }
    result = {
        "wall_s": time.perf_counter() - t0,
        "jobs": [timings[j["index"]] for j in request["jobs"]],
        "peak_rss_mb": peak_rss_mb(),
        "weights": "dequantized from the CTranslate2 model.bin (float32)",
        "missing_keys": list(missing),
        "unexpected_keys": list(unexpected),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    Path(argv[1]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
