"""A batch file against the same jobs submitted one by one: wall time to every job final.

`python -m bench.batch_files [--jobs 500] [--runs 3] [--max-tokens 2]` starts the local stack
with one worker on the dev model. Each run times, from the first request to the last job final:

- **batch file**: the jobs as one input file of OpenAI's Batch API (`POST /v1/files`, then
  `POST /v1/batches`), the fan-out behind the API, polled at `GET /v1/batches/{id}` until
  completed (its output file written);
- **one by one**: the same jobs submitted over HTTP by the Python client's batch helper
  (`headrace.client.batch`, 16 in flight), on the batch lane too, each polled to its end.

Both decode the same prompts greedily with the same `max_tokens`, so the difference is the way
in. It prints jobs/s for each, the ratio (batch file over one by one) and the medians of the
runs, and writes them to bench/out/batch-files-<time>/results.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from headrace.client import configure
from headrace.client._config import current_config
from headrace.client.batch import abatch_create
from headrace.client.server_batch import upload
from headrace.dev.model import DEV_MODEL_NAME
from headrace.dev.stack import LocalStack, StackOptions

OUT = Path(__file__).resolve().parent / "out"


def _call(stack: LocalStack, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(stack.base_url + path, data=data, method=method)
    request.add_header("x-api-key", stack.api_key)
    request.add_header("content-type", "application/json")
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _prompts(jobs: int, tag: str) -> list[str]:
    return [f"The mill race {tag} {i}" for i in range(jobs)]


def through_batch_file(stack: LocalStack, prompts: list[str], max_tokens: int) -> float:
    lines = [
        {
            "custom_id": str(i),
            "method": "POST",
            "url": "/v1/completions",
            "body": {
                "model": DEV_MODEL_NAME,
                "prompt": prompt,
                "max_tokens": max_tokens,
                "temperature": 0,
            },
        }
        for i, prompt in enumerate(prompts)
    ]
    content = "".join(json.dumps(line) + "\n" for line in lines).encode()
    started = time.monotonic()
    file_id = upload(current_config(), content, "bench.jsonl")
    body = {"input_file_id": file_id, "endpoint": "/v1/completions", "completion_window": "24h"}
    batch = _call(stack, "POST", "/v1/batches", body)
    while batch["status"] not in ("completed", "failed", "cancelled", "expired"):
        time.sleep(0.2)
        batch = _call(stack, "GET", f"/v1/batches/{batch['id']}")
    elapsed = time.monotonic() - started
    counts = batch["request_counts"]
    assert batch["status"] == "completed" and counts["completed"] == len(prompts), batch
    return elapsed


def one_by_one(prompts: list[str], max_tokens: int, concurrency: int) -> float:
    items = [{"prompt": prompt} for prompt in prompts]
    started = time.monotonic()
    results = asyncio.run(
        abatch_create(
            items,
            model=DEV_MODEL_NAME,
            concurrency=concurrency,
            max_new_tokens=max_tokens,
            temperature=0.0,
            priority="batch",
        )
    )
    elapsed = time.monotonic() - started
    assert all(result.response is not None for result in results), "a job did not succeed"
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.batch_files", description=__doc__)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16, help="one by one: in flight")
    args = parser.parse_args(argv)
    run_dir = OUT / f"batch-files-{time.strftime('%Y%m%d-%H%M%S')}"
    stack = LocalStack(StackOptions(gateway_port=0, logs_dir=run_dir / "logs"))
    stack.start(workers=1)
    runs: list[dict[str, float]] = []
    try:
        configure(base_url=stack.base_url, api_key=stack.api_key)
        one_by_one(_prompts(8, "warm-up"), args.max_tokens, args.concurrency)
        for run in range(args.runs):
            tag = uuid.uuid4().hex[:6]
            # Alternate the order, so neither way always meets a stack warmed by the other.
            ways = ["batch_file", "one_by_one"] if run % 2 == 0 else ["one_by_one", "batch_file"]
            figures: dict[str, float] = {}
            for way in ways:
                prompts = _prompts(args.jobs, f"{tag}-{way}")
                if way == "batch_file":
                    figures[way] = through_batch_file(stack, prompts, args.max_tokens)
                else:
                    figures[way] = one_by_one(prompts, args.max_tokens, args.concurrency)
            runs.append(figures)
            print(
                f"run {run + 1}: batch file {figures['batch_file']:.1f} s,"
                f" one by one {figures['one_by_one']:.1f} s",
                flush=True,
            )
    finally:
        stack.stop()
    report = {
        way: {
            "median_s": round(statistics.median(r[way] for r in runs), 2),
            "jobs_per_s": round(args.jobs / statistics.median(r[way] for r in runs), 1),
        }
        for way in ("batch_file", "one_by_one")
    }
    ratio = report["batch_file"]["jobs_per_s"] / report["one_by_one"]["jobs_per_s"]
    print(f"{args.jobs} jobs, max_tokens {args.max_tokens}, medians of {len(runs)} runs:")
    for way, figures in report.items():
        print(f"  {way:<11} {figures['median_s']:7.1f} s  {figures['jobs_per_s']:6.1f} jobs/s")
    print(f"  batch file / one by one: {ratio:.2f}x the jobs/s")
    run_dir.mkdir(parents=True, exist_ok=True)
    results = {"args": vars(args), "runs": runs, "report": report, "ratio": round(ratio, 3)}
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
