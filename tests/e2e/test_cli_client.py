"""`headrace complete | submit | status` end to end, as subprocesses against the local stack."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from headrace import Completion
from headrace.client import configure, reset_configuration
from headrace.dev.model import DEV_MODEL_NAME
from headrace.dev.stack import LocalStack

ROOT = Path(__file__).resolve().parents[2]


def env_for(stack: LocalStack | None, home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADRACE_")}
    env["HEADRACE_HOME"] = str(home)  # no dev-stack.json of this machine
    if stack is not None:
        env["HEADRACE_BASE_URL"] = stack.base_url
        env["HEADRACE_API_KEY"] = stack.api_key
    return {**env, **extra}


def headrace(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "headrace.cli.main", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def env(stack: LocalStack, tmp_path: Path) -> dict[str, str]:
    return env_for(stack, tmp_path)


def expected_text(stack: LocalStack, prompt: str, max_new_tokens: int) -> str:
    configure(base_url=stack.base_url, api_key=stack.api_key)
    try:
        response = Completion.create(
            DEV_MODEL_NAME, prompt, max_new_tokens=max_new_tokens, temperature=0
        )
    finally:
        reset_configuration()
    return response.output.text


def test_complete_prints_the_text(stack: LocalStack, env: dict[str, str]) -> None:
    done = headrace("complete", "The river", "--max-new-tokens", "9", "--temperature", "0", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected_text(stack, "The river", 9) + "\n"
    assert done.stderr == ""


def test_complete_stream_prints_the_same_text(stack: LocalStack, env: dict[str, str]) -> None:
    args = ("complete", "The wheel", "--max-new-tokens", "12", "--temperature", "0", "--stream")
    done = headrace(*args, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected_text(stack, "The wheel", 12) + "\n"


def test_complete_json_then_status(env: dict[str, str]) -> None:
    done = headrace("complete", "The mill", "--temperature", "0", "--json", env=env)
    assert done.returncode == 0, done.stderr
    response = json.loads(done.stdout)
    status = headrace("status", response["request_id"], env=env)
    assert status.returncode == 0, status.stderr
    job = json.loads(status.stdout)
    assert job["status"] == "SUCCEEDED" and job["output"] == response["output"]


def write_prompts(path: Path, count: int) -> None:
    lines = []
    for i in range(count):
        line: dict[str, object] = {"prompt": f"Prompt {i} of the mill", "max_new_tokens": 4}
        if i % 2:
            line["id"] = f"p-{i}"  # the others get their line number
        lines.append(json.dumps(line))
    path.write_text("\n".join(lines) + "\n")


def result_lines(path: Path) -> list[dict[str, object]]:
    text = path.read_text()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_submit_20_prompts_then_rerun_submits_nothing(env: dict[str, str], tmp_path: Path) -> None:
    prompts, results = tmp_path / "prompts.jsonl", tmp_path / "results.jsonl"
    write_prompts(prompts, 20)  # more than --concurrency: the submitter refills its slots
    args = ("submit", "--input", str(prompts), "--output", str(results), "--temperature", "0")
    done = headrace(*args, "--concurrency", "16", env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "20 submitted, 0 already done: 20 succeeded, 0 failed" in done.stderr
    assert "tokens/s" in done.stderr  # the progress line
    records = result_lines(results)
    assert len(records) == 20
    ids = {json.dumps(r["id"]) for r in records}
    assert ids == {json.dumps(f"p-{i}" if i % 2 else i + 1) for i in range(20)}
    assert all(r["status"] == "SUCCEEDED" and r["request_id"] for r in records)
    assert all(isinstance(r["output"], dict) and r["output"]["text"] for r in records)

    again = headrace(*args, env=env)
    assert again.returncode == 0, again.stderr
    assert "0 submitted, 20 already done" in again.stderr
    assert len(result_lines(results)) == 20

    # An interrupted run: 15 whole lines and a torn one. The re-run does the other 5.
    kept = results.read_text().splitlines(keepends=True)[:15]
    results.write_text("".join(kept) + '{"id": 7, "request_')
    resumed = headrace(*args, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "5 submitted, 15 already done: 5 succeeded" in resumed.stderr
    records = result_lines(results)
    assert len(records) == 20 and len({json.dumps(r["id"]) for r in records}) == 20


def test_submit_records_rejected_lines_as_failed(env: dict[str, str], tmp_path: Path) -> None:
    prompts, results = tmp_path / "prompts.jsonl", tmp_path / "results.jsonl"
    prompts.write_text(
        '{"prompt": "fine", "max_new_tokens": 2}\n{"prompt": "hot", "temperature": 7}\n'
    )
    done = headrace("submit", "--input", str(prompts), "--output", str(results), env=env)
    assert done.returncode == 1
    assert "1 succeeded, 1 failed" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("headrace: 1 prompts did not succeed")
    failed = next(r for r in result_lines(results) if r["status"] == "FAILED")
    assert failed["id"] == 2 and failed["error"]["status_code"] == 400  # type: ignore[index]


def test_ctrl_c_leaves_whole_lines_and_a_rerun_finishes(
    env: dict[str, str], tmp_path: Path
) -> None:
    prompts, results = tmp_path / "prompts.jsonl", tmp_path / "results.jsonl"
    lines = [json.dumps({"prompt": f"Long job {i}", "max_new_tokens": 48}) for i in range(12)]
    prompts.write_text("\n".join(lines) + "\n")
    args = ["submit", "--input", str(prompts), "--output", str(results)]
    command = [sys.executable, "-m", "headrace.cli.main", *args, "--concurrency", "2"]
    process = subprocess.Popen(
        command,
        env=env,
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
        # A test run started in the background (`make test &`) has SIGINT ignored, and a
        # child inherits that: the Ctrl-C this test sends would never arrive.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and results_count(results) < 3:
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "re-run the same command" in stderr
    partial = result_lines(results)
    assert 3 <= len(partial) < 12
    rerun = headrace(*args, "--concurrency", "16", env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{12 - len(partial)} submitted, {len(partial)} already done" in rerun.stderr
    assert len(result_lines(results)) == 12


def results_count(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


# ---- errors: one line, no traceback -------------------------------------------------------


def assert_one_line_error(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("headrace: "), done.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_a_bad_key_is_one_line(stack: LocalStack, tmp_path: Path) -> None:
    env = env_for(stack, tmp_path, HEADRACE_API_KEY="hr-wrong")
    assert_one_line_error(headrace("complete", "x", env=env), "unknown API key (HTTP 401)")


def test_an_unknown_request_and_model_are_one_line(env: dict[str, str]) -> None:
    assert_one_line_error(headrace("status", "nope", env=env), "not found (HTTP 404)")
    done = headrace("complete", "x", "--model", "nope", env=env)
    assert_one_line_error(done, "model 'nope' not found")
    assert_one_line_error(
        headrace("complete", "x", "--temperature", "2", env=env), "temperature", "(HTTP 400)"
    )


def test_a_timeout_says_how_to_follow_the_request(env: dict[str, str]) -> None:
    done = headrace("complete", "The river", "--max-new-tokens", "64", "--timeout", "0", env=env)
    assert_one_line_error(done, "did not finish within --timeout", "`headrace status ")


def test_no_stack_running_is_one_line_naming_make_dev(tmp_path: Path) -> None:
    env = env_for(None, tmp_path, HEADRACE_BASE_URL="http://127.0.0.1:9")
    done = headrace("complete", "x", env=env)
    assert_one_line_error(done, "cannot reach the Headrace API at http://127.0.0.1:9", "make dev")
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "a"}\n{"prompt": "b"}\n')
    done = headrace("submit", "--input", str(prompts), "--output", str(tmp_path / "r"), env=env)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].endswith("or set HEADRACE_BASE_URL")


def test_bad_input_names_the_line(tmp_path: Path) -> None:
    env = env_for(None, tmp_path, HEADRACE_BASE_URL="http://127.0.0.1:9")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "a"}\n\n{"prompt": "b",}\n')
    args = ("submit", "--input", str(prompts), "--output", str(tmp_path / "out.jsonl"))
    assert_one_line_error(headrace(*args, env=env), f"{prompts}:3: not valid JSON")
    prompts.write_text('{"prompt": "a", "id": 1}\n{"text": "b"}\n')
    assert_one_line_error(headrace(*args, env=env), f'{prompts}:2: "prompt" (a string) is required')
    prompts.write_text('{"prompt": "a", "id": 2}\n{"prompt": "b"}\n')
    assert_one_line_error(headrace(*args, env=env), f"{prompts}:2: id 2 repeats line 1")
    prompts.unlink()
    assert_one_line_error(headrace(*args, env=env), "No such file", str(prompts))


@pytest.mark.parametrize("command", ["complete", "submit", "status"])
def test_every_command_has_help(command: str, tmp_path: Path) -> None:
    done = headrace(command, "--help", env=env_for(None, tmp_path))
    assert done.returncode == 0 and f"usage: headrace {command}" in done.stdout
    assert "--base-url" in done.stdout
