"""`headrace submit --server-side`: the prompts of a JSONL file as one batch of OpenAI's Batch
API (README "OpenAI Batch API"): uploaded as a batch input file, made jobs by the server, their
progress shown from the batch's request_counts, the output downloaded into submit's results
format. Prompts already in the results with a final status are not sent again.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from headrace.client._config import ClientConfig, current_config
from headrace.client._http import request, unreachable
from headrace.client.errors import error_from_response
from headrace.client.submit_file import InputFileError, PromptLine, finished_ids, read_prompts

# Headrace's request field -> OpenAI's completions parameter.
_FIELDS = {
    "prompt": "prompt",
    "model": "model",
    "max_new_tokens": "max_tokens",
    "temperature": "temperature",
    "stop_sequences": "stop",
    "top_p": "top_p",
    "top_k": "top_k",
}
_FINAL = {"completed", "failed", "cancelled", "expired"}
_HALTED = {"batch_cancelled": "CANCELLED", "batch_expired": "TIMED_OUT"}


@dataclass
class ServerSideSummary:
    submitted: int = 0
    already_done: int = 0
    succeeded: int = 0
    failed: int = 0
    batch_id: str | None = None
    status: str | None = None

    def line(self) -> str:
        return (
            f"batch {self.batch_id} {self.status}: {self.submitted} submitted,"
            f" {self.already_done} already done: {self.succeeded} succeeded,"
            f" {self.failed} did not"
        )


def batch_line(line: PromptLine, model: str, defaults: dict[str, Any]) -> dict[str, Any]:
    """A prompt line as a line of a batch input file for /v1/completions."""
    fields = {**defaults, **line.fields}
    fields.setdefault("model", model)
    body: dict[str, Any] = {}
    for name, value in fields.items():
        if name == "return_token_log_probs":
            if value:
                body["logprobs"] = 0
        elif name == "priority":
            continue  # a batch's jobs are on the batch lane
        elif name in _FIELDS:
            body[_FIELDS[name]] = value
        else:
            raise InputFileError(f"id {line.key}: {name} has no equivalent in a server-side batch")
    return {"custom_id": line.key, "method": "POST", "url": "/v1/completions", "body": body}


def result_record(line: PromptLine, output: dict[str, Any]) -> dict[str, Any]:
    """An output or error line of the batch in submit's results format."""
    response = output.get("response")
    if response is not None and response.get("status_code") == 200:
        body = response["body"]
        choice = body["choices"][0]
        result: dict[str, Any] = {
            "text": choice["text"],
            "num_prompt_tokens": body["usage"]["prompt_tokens"],
            "num_completion_tokens": body["usage"]["completion_tokens"],
        }
        logprobs = choice.get("logprobs")
        if logprobs:
            pairs = zip(logprobs["tokens"], logprobs["token_logprobs"], strict=True)
            result["tokens"] = [{"token": t, "log_prob": p} for t, p in pairs]
        return {"id": line.id, "request_id": body["id"], "status": "SUCCEEDED", "output": result}
    if response is not None:
        error = response["body"].get("error", {})
        request_id = response.get("request_id")
        status, code = "FAILED", response["status_code"]
    else:
        error = output.get("error") or {}
        request_id = error.get("request_id")
        status, code = _HALTED.get(error.get("code", ""), "FAILED"), 409
    detail = {"status_code": code, "detail": error.get("message", "")}
    return {"id": line.id, "request_id": request_id, "status": status, "error": detail}


def _raw(
    config: ClientConfig, method: str, path: str, data: bytes | None, content_type: str
) -> bytes:
    headers = {**config.headers(), "content-type": content_type, "accept": "*/*"}
    req = urllib.request.Request(config.url(path), data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=120) as response:
            return bytes(response.read())
    except urllib.error.HTTPError as e:
        with e:
            payload = e.read()
        raise error_from_response(e.code, payload) from None
    except urllib.error.URLError as e:
        raise unreachable(config.base_url, e.reason, refused=False) from e


def upload(config: ClientConfig, content: bytes, filename: str) -> str:
    boundary = uuid.uuid4().hex
    form = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file";'
            f' filename="{filename}"\r\n'
            "Content-Type: application/jsonl\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    answer = _raw(config, "POST", "/v1/files", form, f"multipart/form-data; boundary={boundary}")
    return str(json.loads(answer)["id"])


def submit_server_side(
    input_path: Path,
    output_path: Path,
    *,
    model: str | None = None,
    defaults: dict[str, Any] | None = None,
    poll_seconds: float = 1.0,
    progress: TextIO | None = sys.stderr,
) -> ServerSideSummary:
    config = current_config()
    prompts = read_prompts(input_path)
    done = finished_ids(output_path)
    todo = {line.key: line for line in prompts if line.key not in done}
    summary = ServerSideSummary(submitted=len(todo), already_done=len(prompts) - len(todo))
    if not todo:
        return summary
    lines = [
        batch_line(line, model or config.default_model, defaults or {}) for line in todo.values()
    ]
    content = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode()
    file_id = upload(config, content, input_path.name)
    body = {"input_file_id": file_id, "endpoint": "/v1/completions", "completion_window": "24h"}
    _, batch = request(config, "POST", "/v1/batches", body=body)
    summary.batch_id = batch["id"]
    while batch["status"] not in _FINAL:
        if progress is not None:
            counts = batch["request_counts"]
            progress.write(
                f"\r{batch['status']}: {counts['completed']}/{counts['total']} completed,"
                f" {counts['failed']} failed   "
            )
            progress.flush()
        time.sleep(poll_seconds)
        _, batch = request(config, "GET", f"/v1/batches/{summary.batch_id}")
    if progress is not None:
        progress.write("\n")
    summary.status = batch["status"]
    with output_path.open("a", encoding="utf-8") as output:
        for role in ("output_file_id", "error_file_id"):
            if not batch.get(role):
                continue
            text = _raw(config, "GET", f"/v1/files/{batch[role]}/content", None, "text/plain")
            for raw in text.decode().splitlines():
                answer = json.loads(raw)
                record = result_record(todo[answer["custom_id"]], answer)
                output.write(json.dumps(record, ensure_ascii=False) + "\n")
                if record["status"] == "SUCCEEDED":
                    summary.succeeded += 1
                else:
                    summary.failed += 1
    return summary
