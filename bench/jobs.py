"""The benchmark's model and job set: seeded, so every system decodes the same work."""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from headrace.dev.model import build_random_model
from headrace.dev.model.tokenizer import corpus_paragraphs
from worker.decoding import TextCodec

MAX_POSITIONS = 1024  # learned position table of the GPT-2 shaped model


@dataclass(frozen=True)
class ModelShape:
    num_layers: int
    d_model: int
    num_heads: int
    vocab_size: int

    @property
    def label(self) -> str:
        return (
            f"{self.num_layers} layers, d={self.d_model}, {self.num_heads} heads, "
            f"vocab {self.vocab_size:,}, int8, random weights"
        )


GPT2_SMALL = ModelShape(num_layers=12, d_model=768, num_heads=12, vocab_size=50257)
TINY = ModelShape(num_layers=2, d_model=128, num_heads=4, vocab_size=4096)


@dataclass(frozen=True)
class JobSetSpec:
    count: int = 64
    prompt_tokens: tuple[int, int] = (8, 256)
    max_new_tokens: tuple[int, int] = (16, 128)
    seed: int = 0


@dataclass(frozen=True)
class Job:
    index: int
    prompt: str
    prompt_tokens: int  # as the worker counts them: with the begin token
    max_new_tokens: int


def ensure_model(out_dir: Path, shape: ModelShape) -> Path:
    """Build the random model once per shape (about 3 s for GPT-2 small) and reuse it."""
    stamp = out_dir / "bench-shape.json"
    wanted = json.dumps(asdict(shape), sort_keys=True)
    if stamp.is_file() and stamp.read_text() == wanted:
        return out_dir
    build_random_model(
        out_dir,
        num_layers=shape.num_layers,
        d_model=shape.d_model,
        num_heads=shape.num_heads,
        vocab_size=shape.vocab_size,
        quantization="int8",
    )
    stamp.write_text(wanted)
    return out_dir


def model_and_codec(out: Path, name: str, shape: ModelShape) -> tuple[Path, TextCodec]:
    """The model `name` of `shape` in `out`/models (built the first time), and its codec."""
    model_dir = ensure_model(out / "models" / name, shape)
    return model_dir, load_codec(model_dir)


def load_codec(model_dir: Path) -> TextCodec:
    """The worker's tokenization, with the begin/end tokens the model's config names."""
    config = json.loads((model_dir / "config.json").read_text())
    return TextCodec.from_file(
        model_dir / "tokenizer.json",
        bos_token=config.get("bos_token"),
        eos_token=config.get("eos_token") or "</s>",
    )


def make_jobs(codec: TextCodec, spec: JobSetSpec) -> list[Job]:
    """Prompts of corpus words with a target token count drawn uniformly from the range."""
    rng = random.Random(spec.seed)
    words = sorted({w for p in corpus_paragraphs() for w in p.split()})
    cost = {w: len(codec.tokenizer.encode(" " + w, add_special_tokens=False).ids) for w in words}
    jobs = []
    for index in range(spec.count):
        target = rng.randint(*spec.prompt_tokens)
        new_tokens = rng.randint(*spec.max_new_tokens)
        chosen: list[str] = []
        count = 1  # the begin token
        while True:
            word = rng.choice(words)
            if count + cost[word] > target:
                break
            chosen.append(word)
            count += cost[word]
        prompt = " ".join(chosen) or rng.choice(words)
        tokens = len(codec.prompt_tokens(prompt))
        if tokens + new_tokens > MAX_POSITIONS:
            raise ValueError(f"job {index}: {tokens} + {new_tokens} tokens exceed the positions")
        jobs.append(Job(index, prompt, tokens, new_tokens))
    return jobs


def save_jobs(jobs: list[Job], path: Path) -> None:
    path.write_text(json.dumps([asdict(j) for j in jobs]))


def load_jobs(path: Path) -> list[Job]:
    return [Job(**raw) for raw in json.loads(path.read_text())]
