"""The one module that imports ctranslate2: load a generator, run a batch with a step callback."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import ctranslate2
import numpy as np
import numpy.typing as npt

from headrace.core.errors import ModelLoadError

logger = logging.getLogger("headrace.engine")

# Every replica's thread takes the GIL once per generated token, for the step callback. When
# one thread releases it and takes it straight back (the next item's callback), another that
# waits (a replica, the worker's event loop) gets it only once the switch interval has passed:
# 5 ms by default, a sizeable part of a CPU decoding step. A shorter interval made two
# replicas' batches finish sooner (measured when it was set; the commit that set it has the
# figures).
GIL_SWITCH_INTERVAL_S = 0.0005

# CTranslate2's converters record no context length, so a model declares its own under this key
# in its config.json (the name Hugging Face configs give it). One that does not gets the
# default: the dev model (rotary positions, no table) has no hard limit, but its prompt pass
# grows with the square of the prompt: 4,096 tokens took 6 s and 360 MB on 2 CPU cores, 8,192
# 18 s and 1.2 GB, 32,002 100 s and 16 GB.
CONTEXT_KEY = "max_position_embeddings"
DEFAULT_MAX_CONTEXT_TOKENS = 4096
# Sequences `score` forwards together (a guided_choice's choices, each after the prompt).
SCORE_BATCH_SIZE = 16


@dataclass(frozen=True)
class SamplingParams:
    """Batch-wide decoding options: CTranslate2 applies them to every item of a batch."""

    top_k: int = 1  # 1 = greedy (and temperature is then ignored), 0 = the whole vocabulary
    top_p: float = 1.0
    temperature: float = 1.0


@dataclass(frozen=True)
class Step:
    """One generated token of one batch item, as the callback sees it."""

    index: int
    token_id: int
    log_prob: float | None
    is_last: bool


@dataclass(frozen=True)
class EngineConfig:
    device: str = "auto"
    compute_type: str = "default"
    inter_threads: int = 0
    intra_threads: int = 0


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


def default_threads(device: str) -> tuple[int, int]:
    """(inter_threads, intra_threads) for the device.

    On CPU, one replica per core with one thread each beat one replica with all cores for
    concurrent requests (DESIGN.md: 132 vs 69 tok/s on 2 cores). On CUDA a second replica
    overlaps host work with the GPU. Cores are those this process may run on (a container's
    CPU set, `taskset`), not the machine's.
    """
    if device == "cuda":
        return 2, 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, cores or 1), 1


@dataclass(frozen=True)
class BatchingDefaults:
    max_batch_size: int
    max_batch_wait_ms: int  # an idle worker waits this long for company
    max_batch_hold_ms: int  # a busy one, while jobs keep arriving
    prefetch_per_replica: int  # jobs a worker holds per replica, running or waiting


def default_batching(device: str) -> BatchingDefaults:
    """Batching defaults for the device. The worker times its batch width at warm-up
    (worker/tuning.py); `max_batch_size` here is the width the template's scaling assumes.

    Measured on 2 CPU cores with a GPT-2-small-shaped int8 model (bench/): once batches are
    grouped by prompt length, batch sizes 8 to 32 were within noise on AMD EPYC cores, 4
    clearly worse; on Xeon (Sapphire Rapids) cores 8 beat 16 (the 64 jobs in 22.7 s against
    24.4 s, mean of 4 alternating pairs): smaller batches span fewer prompt lengths, and eight
    of them share out between two replicas more evenly than four. A CPU decoding step takes
    30-60 ms and a batch runs for seconds, so waiting 25 ms for company when idle is cheap,
    and up to 4 s during a burst pays. The scheduler plans among what the worker holds, so it
    holds four batches per replica: a burst planned in pieces put the longest prompts, which
    arrived last, in the last batch. A GPU step is far faster and batches far larger.
    """
    if device == "cuda":
        return BatchingDefaults(32, 10, 200, 64)
    return BatchingDefaults(8, 25, 4000, 32)


class Engine:
    def __init__(self, model_dir: Path, config: EngineConfig) -> None:
        device = resolve_device(config.device)
        inter, intra = default_threads(device)
        self.inter_threads = config.inter_threads or inter
        self.intra_threads = config.intra_threads or intra
        self.device = device
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)  # process-wide: this process decodes
        try:
            self._generator = ctranslate2.Generator(
                str(model_dir),
                device=device,
                compute_type=config.compute_type,
                inter_threads=self.inter_threads,
                intra_threads=self.intra_threads,
            )
            model_config = json.loads((model_dir / "config.json").read_text())
        except (RuntimeError, ValueError, OSError) as e:
            raise ModelLoadError(f"cannot load CTranslate2 model from {model_dir}: {e}") from e
        self.bos_token: str | None = model_config.get("bos_token")
        self.eos_token: str = model_config.get("eos_token") or "</s>"
        # Prompt tokens plus max_new_tokens of one request may not pass this.
        self.max_context_tokens = _max_context_tokens(model_config)
        logger.info(
            "model loaded",
            extra={
                "model_dir": str(model_dir),
                "device": device,
                "compute_type": self._generator.compute_type,
                "inter_threads": self.inter_threads,
                "intra_threads": self.intra_threads,
            },
        )

    def generate(
        self,
        prompts: Sequence[Sequence[str]],
        *,
        params: SamplingParams,
        max_new_tokens: int,
        return_log_probs: bool,
        on_step: Callable[[Step], bool],
        min_new_tokens: int = 0,
        shared_prefix: Sequence[str] = (),
    ) -> None:
        """Decode a batch, calling `on_step` for every token; it returns True to stop that item.

        Blocks until the batch is done: call it from a worker thread. `on_step` runs on a
        CTranslate2 thread and must never raise (an exception aborts the whole batch).
        `shared_prefix` comes before every prompt; the replica forwards it once and keeps its
        state for the next batch with the same prefix (CTranslate2's cached static prompt).
        """

        def callback(result: ctranslate2.GenerationStepResult) -> bool:
            return on_step(
                Step(
                    index=result.batch_id,
                    token_id=result.token_id,
                    log_prob=result.log_prob,
                    is_last=result.is_last,
                )
            )

        prefix: dict[str, object] = (
            {"static_prompt": list(shared_prefix), "cache_static_prompt": True}
            if shared_prefix
            else {}
        )
        self._generator.generate_batch(
            [list(p) for p in prompts],
            max_length=max_new_tokens,
            min_length=min_new_tokens,
            sampling_topk=params.top_k,
            sampling_topp=params.top_p,
            sampling_temperature=params.temperature,
            include_prompt_in_result=False,
            return_scores=return_log_probs,
            beam_size=1,
            callback=callback,
            **prefix,
        )

    def score(self, sequences: Sequence[Sequence[str]]) -> list[list[float]]:
        """The log prob of every token of each sequence after its first, given those before."""
        results = self._generator.score_batch(
            [list(s) for s in sequences], max_batch_size=SCORE_BATCH_SIZE
        )
        return [list(result.log_probs) for result in results]

    def generate_with_logits(
        self,
        prompt: Sequence[str],
        *,
        params: SamplingParams,
        max_new_tokens: int,
        on_step: Callable[[Step], bool],
    ) -> npt.NDArray[np.float32]:
        """Decode one item as `generate` does and return the model's raw logits (before any
        sampling option) at each step it took, one row a step: the step at which `on_step`
        stopped it is the last row. The prompt is forwarded whole: no state is kept."""

        def callback(result: ctranslate2.GenerationStepResult) -> bool:
            step = Step(0, result.token_id, result.log_prob, result.is_last)
            return on_step(step)

        result = self._generator.generate_batch(
            [list(prompt)],
            max_length=max_new_tokens,
            sampling_topk=params.top_k,
            sampling_topp=params.top_p,
            sampling_temperature=params.temperature,
            include_prompt_in_result=False,
            return_scores=True,
            return_logits_vocab=True,
            beam_size=1,
            callback=callback,
        )[0]
        rows = [
            row if row.device == "cpu" else row.to_device(ctranslate2.Device.cpu)
            for row in result.logits[0]
        ]
        return np.stack([np.asarray(row, dtype=np.float32) for row in rows])

    def close(self) -> None:
        # Releasing the generator before interpreter exit avoids an abort at shutdown.
        del self._generator


def _max_context_tokens(model_config: dict[str, object]) -> int:
    declared = model_config.get(CONTEXT_KEY)
    if isinstance(declared, int) and not isinstance(declared, bool) and declared > 0:
        return declared
    return DEFAULT_MAX_CONTEXT_TOKENS
