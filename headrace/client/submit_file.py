"""Complete every prompt of a JSONL file into a results JSONL file; safe to re-run.

Input lines: `{"prompt": ..., <request fields>, "model"?: ..., "id"?: ...}` (id defaults to the
line number). Each finished prompt appends one whole line `{"id", "request_id", "status",
"output" | "error"}` to the results; ids already there with a final status are skipped.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from headrace.client.batch import FINAL_STATUSES, BatchResult, abatch_as_completed, is_fatal
from headrace.client.errors import HeadraceClientError


class InputFileError(ValueError):
    """A line of the input or results file is not what it must be (the message says which)."""


@dataclass
class PromptLine:
    id: Any
    fields: dict[str, Any]

    @property
    def key(self) -> str:
        return json.dumps(self.id)


def read_prompts(path: Path) -> list[PromptLine]:
    prompts: list[PromptLine] = []
    first_line: dict[str, int] = {}
    with path.open(encoding="utf-8") as lines:
        for number, text in enumerate(lines, start=1):
            if not text.strip():
                continue
            where = f"{path}:{number}"
            try:
                fields = json.loads(text)
            except ValueError as e:
                raise InputFileError(f"{where}: not valid JSON ({e})") from None
            if not isinstance(fields, dict):
                raise InputFileError(f'{where}: expected a JSON object like {{"prompt": "..."}}')
            if not isinstance(fields.get("prompt"), str):
                raise InputFileError(f'{where}: "prompt" (a string) is required')
            line = PromptLine(fields.pop("id", number), fields)
            if line.key in first_line:
                raise InputFileError(f"{where}: id {line.key} repeats line {first_line[line.key]}")
            first_line[line.key] = number
            prompts.append(line)
    return prompts


def finished_ids(path: Path) -> set[str]:
    """Ids with a final status in the results file. A torn last line (the process was killed
    mid-write) is cut off first, so the file holds whole lines only."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        with path.open("r+b") as f:
            f.truncate(keep)
        data = data[:keep]
    done: set[str] = set()
    for number, text in enumerate(data.decode("utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except ValueError:
            raise InputFileError(f"{path}:{number}: not valid JSON; fix or remove it") from None
        if isinstance(record, dict) and record.get("status") in FINAL_STATUSES:
            done.add(json.dumps(record.get("id")))
    return done


def result_record(line: PromptLine, result: BatchResult) -> dict[str, Any]:
    record: dict[str, Any] = {"id": line.id, "request_id": result.request_id}
    record["status"] = result.status
    if result.response is not None:
        record["output"] = result.response.output.model_dump(exclude_none=True)
    elif result.error is not None:
        record["error"] = {"status_code": result.error.status_code, "detail": result.error.detail}
    return record


@dataclass
class SubmitSummary:
    total: int = 0
    already_done: int = 0
    submitted: int = 0
    succeeded: int = 0
    failed: int = 0
    not_finished: int = 0
    tokens: int = 0
    started: float = field(default_factory=time.monotonic)
    fatal: HeadraceClientError | None = None
    first_error: HeadraceClientError | None = None

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    def progress(self) -> str:
        done = self.succeeded + self.failed
        rate = self.tokens / self.seconds if self.seconds > 0 else 0.0
        return (
            f"{done}/{self.submitted} done, {self.failed + self.not_finished} failed,"
            f" {rate:.0f} tokens/s"
        )

    def line(self) -> str:
        return (
            f"{self.submitted} submitted, {self.already_done} already done:"
            f" {self.succeeded} succeeded, {self.failed} failed,"
            f" {self.not_finished} not finished ({self.seconds:.1f}s, {self.tokens} tokens)"
        )


class _Progress:
    def __init__(self, out: TextIO | None, every: float = 0.1) -> None:
        self._out = out
        self._every = every
        self._last = 0.0

    def show(self, summary: SubmitSummary, *, force: bool = False) -> None:
        now = time.monotonic()
        if self._out is None or (not force and now - self._last < self._every):
            return
        self._last = now
        self._out.write(f"\r{summary.progress()}   ")
        self._out.flush()

    def end(self) -> None:
        if self._out is not None and self._last:
            self._out.write("\n")
            self._out.flush()


async def asubmit_file(
    input_path: Path,
    output_path: Path,
    *,
    model: str | None = None,
    defaults: dict[str, Any] | None = None,
    concurrency: int = 16,
    timeout: float = 300.0,  # noqa: ASYNC109 (per prompt)
    progress: TextIO | None = sys.stderr,
    summary: SubmitSummary | None = None,
) -> SubmitSummary:
    """Submit what is not done yet; `summary` (pass one to read it after Ctrl-C) counts."""
    prompts = read_prompts(input_path)
    done = finished_ids(output_path)
    todo = [line for line in prompts if line.key not in done]
    summary = summary or SubmitSummary()
    summary.total, summary.already_done = len(prompts), len(prompts) - len(todo)
    summary.submitted = len(todo)
    if not todo:
        return summary
    bar = _Progress(progress)
    with output_path.open("a", encoding="utf-8") as output:
        try:
            async for result in abatch_as_completed(
                [line.fields for line in todo],
                model=model,
                concurrency=concurrency,
                timeout=timeout,
                **(defaults or {}),
            ):
                if result.final:
                    record = result_record(todo[result.index], result)
                    output.write(json.dumps(record, ensure_ascii=False) + "\n")
                    output.flush()
                if result.response is not None:
                    summary.succeeded += 1
                    summary.tokens += result.response.output.num_completion_tokens
                elif result.final:
                    summary.failed += 1
                else:
                    summary.not_finished += 1
                if is_fatal(result.error) and summary.fatal is None:
                    summary.fatal = result.error
                if result.error is not None and summary.first_error is None:
                    summary.first_error = result.error
                bar.show(summary)
        finally:
            bar.show(summary, force=True)
            bar.end()
    return summary
