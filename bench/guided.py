"""What guided decoding costs: tokens/s under a guide against free decoding of as many tokens.

`python -m bench.guided [--runs 3] [--tokens 64] [--quick]` loads the benchmark model
(GPT-2-small shape, int8, random weights; `--quick`: the dev model, to check the harness) into
`worker.engine.Engine` with the worker's CPU threads, and decodes one request at a time, as a
replica runs a guided job, greedy, the same prompt:

- **free**: `Engine.generate`, exactly `--tokens` tokens (the baseline);
- **guided_regex** and **guided_json**: `worker.guided_jobs.run_guided`, with regexes and a
  schema that cannot end within `--tokens` tokens, so each makes exactly as many: a regex of
  words, which the random model's pseudo-words keep to (the best case: its tokens pass), one
  of digits, which it never keeps to (the worst case: every token is refused and stepped), and
  a JSON Schema (an object holding a list of strings);
- **guided_choice**: one request with 4 choices (scored), against one free request of as many
  tokens as the longest choice.

Each run measures all of them; the ratios are taken within a run, and the medians of the runs
are printed, with the engine calls a guided token took (1.0: every token was refused by the
guide and stepped; a model that keeps to the guide needs fewer).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from bench.jobs import GPT2_SMALL, ensure_model, load_codec
from headrace.core.contracts import CompletionRequest
from headrace.dev.model import build_dev_model
from worker.decoding import ItemDecoder, TextCodec, sampling_params
from worker.engine import Engine, EngineConfig
from worker.guided import Guides
from worker.guided_jobs import run_guided

P = ParamSpec("P")
R = TypeVar("R")

PROMPT = "The river runs past the old mill and the water is cold"
CHOICES = ["the water is cold", "the mill", "a stone bridge over the river", "yes"]


class CountingEngine:
    """The engine, counting the calls a guided decode makes."""

    def __init__(self, engine: Engine) -> None:
        self.max_context_tokens = engine.max_context_tokens
        self.calls = 0
        self.score = self._counted(engine.score)
        self.generate_with_logits = self._counted(engine.generate_with_logits)

    def _counted(self, method: Callable[P, R]) -> Callable[P, R]:
        def counted(*args: P.args, **kwargs: P.kwargs) -> R:
            self.calls += 1
            return method(*args, **kwargs)

        return counted


def guides_for(tokens: int) -> dict[str, dict[str, Any]]:
    """Guides that cannot be complete within `tokens` tokens (a token is at least a byte)."""
    words = {"type": "array", "items": {"type": "string"}, "minItems": tokens}
    return {
        # The random model's tokens are mostly pseudo-words (" kalo"): it keeps to this one.
        "regex, words": {"guided_regex": f"[a-z ,.]{{{tokens * 8}}}"},
        # It never keeps to this one: every token is refused, then stepped.
        "regex, digits": {"guided_regex": f"[0-9]{{{tokens * 8}}}"},
        "json": {
            "guided_json": {
                "type": "object",
                "properties": {"words": words},
                "required": ["words"],
            }
        },
    }


def free(engine: Engine, codec: TextCodec, tokens: int) -> float:
    """Seconds to decode exactly `tokens` tokens without a guide."""
    request = CompletionRequest(prompt=PROMPT, max_new_tokens=tokens, temperature=0)
    prompt = codec.prompt_tokens(PROMPT)
    decoder = ItemDecoder(codec, request, len(prompt))
    start = time.perf_counter()
    engine.generate(
        [prompt],
        params=sampling_params(request),
        max_new_tokens=tokens,
        min_new_tokens=tokens,
        return_log_probs=False,
        on_step=decoder.on_step,
    )
    took = time.perf_counter() - start
    assert decoder.num_completion_tokens == tokens, decoder.num_completion_tokens
    return took


def guided(
    engine: CountingEngine, guides: Guides, request: CompletionRequest
) -> tuple[float, ItemDecoder]:
    codec = guides.codec
    prompt = codec.prompt_tokens(request.prompt)
    decoder = ItemDecoder(codec, request, len(prompt))
    params = sampling_params(request, codec.vocabulary_size)
    start = time.perf_counter()
    run_guided(
        engine,
        guides,
        request,
        prompt,
        [],
        params,
        lambda step: decoder.on_step(step) or decoder.finished,
    )
    took = time.perf_counter() - start
    decoder.finish()
    return took, decoder


def one_run(engine: Engine, guides: Guides, tokens: int) -> dict[str, float]:
    codec = guides.codec
    counting = CountingEngine(engine)
    baseline = free(engine, codec, tokens)
    result = {"free_tok_s": tokens / baseline}
    for name, fields in guides_for(tokens).items():
        request = CompletionRequest(prompt=PROMPT, max_new_tokens=tokens, temperature=0, **fields)
        counting.calls = 0
        took, decoder = guided(counting, guides, request)
        assert decoder.num_completion_tokens == tokens, (name, decoder.num_completion_tokens)
        result[f"{name}_tok_s"] = tokens / took
        result[f"{name}_ratio"] = baseline / took
        result[f"{name}_calls_per_token"] = counting.calls / tokens
    longest = max(len(codec.tokenizer.encode(c, add_special_tokens=False).ids) for c in CHOICES)
    choice = CompletionRequest(prompt=PROMPT, max_new_tokens=longest, guided_choice=CHOICES)
    result["choice_s"], _ = guided(counting, guides, choice)
    result["choice_free_s"] = free(engine, codec, longest)
    result["choice_ratio"] = result["choice_s"] / result["choice_free_s"]
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.guided", description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="the dev model (checks the harness)")
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    args = parser.parse_args(argv)
    if args.quick:
        model_dir = build_dev_model(args.out / "models" / "guided-dev")
        label = "dev model"
    else:
        model_dir = ensure_model(args.out / "models" / "bench-gpt2", GPT2_SMALL)
        label = GPT2_SMALL.label
    engine = Engine(model_dir, EngineConfig(device="cpu", compute_type="int8"))
    try:
        guides = Guides(load_codec(model_dir))
        free(engine, guides.codec, 4)  # warm up
        runs = [one_run(engine, guides, args.tokens) for _ in range(args.runs)]
    finally:
        engine.close()
    medians = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    print(f"guided decoding, {label}, {args.tokens} tokens, greedy, median of {args.runs} runs")
    print(f"  free decoding        {medians['free_tok_s']:7.1f} tok/s")
    for name in guides_for(args.tokens):
        print(
            f"  {name:<20} {medians[f'{name}_tok_s']:7.1f} tok/s"
            f"  ratio {medians[f'{name}_ratio']:.2f} of free"
            f"  ({medians[f'{name}_calls_per_token']:.2f} engine calls a token)"
        )
    print(
        f"  guided_choice ({len(CHOICES)})    {medians['choice_s'] * 1000:7.1f} ms"
        f"  against {medians['choice_free_s'] * 1000:.1f} ms free"
        f"  ({medians['choice_ratio']:.2f}x)"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "guided.json").write_text(json.dumps({"runs": runs, "medians": medians}, indent=1))


if __name__ == "__main__":
    main()
