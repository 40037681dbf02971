"""Client-side CLI commands (complete, submit, status, cancel). Registered by headrace.cli.main.

Every failure prints one line, `headrace: <what went wrong>`, and exits non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from headrace.client import Completion, CompletionTimeoutError, HeadraceClientError, configure
from headrace.client.server_batch import submit_server_side
from headrace.client.submit_file import InputFileError, SubmitSummary, asubmit_file

_CONFIG_HELP = (
    "Where to send requests: --base-url/--api-key, else HEADRACE_BASE_URL, HEADRACE_WS_URL and "
    "HEADRACE_API_KEY, else the running `headrace dev` (its dev-stack.json), else "
    "http://127.0.0.1:8080."
)


class CliError(Exception):
    """A problem with the command's input, reported as one line."""


def register(commands: argparse._SubParsersAction[Any]) -> None:
    """Add the client commands to the `headrace` parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--base-url", help="the API's base URL")
    common.add_argument("--api-key", help="the API key (sent as x-api-key)")

    complete = commands.add_parser(
        "complete",
        parents=[common],
        help="complete one prompt and print the text",
        description=f"Complete PROMPT and print the generated text. {_CONFIG_HELP}",
    )
    complete.add_argument("prompt", metavar="PROMPT")
    complete.add_argument("--model", help="model name (default: the stack's default model)")
    complete.add_argument("--max-new-tokens", type=int, default=20, help="(default: 20)")
    complete.add_argument(
        "--temperature", type=float, default=0.2, help="0 is greedy (default: 0.2)"
    )
    complete.add_argument("--stream", action="store_true", help="print tokens as they arrive")
    complete.add_argument("--json", action="store_true", help="print the whole response as JSON")
    complete.add_argument("--timeout", type=float, default=300.0, help="seconds (default: 300)")
    complete.set_defaults(run=_guarded(_run_complete))

    submit = commands.add_parser(
        "submit",
        parents=[common],
        help="complete many prompts from a JSONL file, with progress; safe to re-run",
        description='Each input line is {"prompt": ...} with optional request fields '
        '(max_new_tokens, temperature, stop_sequences, ...), "model" and "id" (default: the '
        'line number). Results are appended to --output as {"id", "request_id", "status", '
        '"output" or "error"}, one line per finished prompt; ids already there with a final '
        "status are not submitted again, so an interrupted run continues where it stopped. "
        f"Exit status 1 if any prompt failed or did not finish. {_CONFIG_HELP}",
    )
    submit.add_argument("--input", required=True, metavar="PROMPTS.jsonl")
    submit.add_argument("--output", required=True, metavar="RESULTS.jsonl")
    submit.add_argument("--model", help="model for lines that name none")
    submit.add_argument("--max-new-tokens", type=int, help="for lines that set none")
    submit.add_argument("--temperature", type=float, help="for lines that set none")
    submit.add_argument(
        "--priority",
        choices=["batch", "interactive"],
        default="batch",
        help="lane for lines that set none (default: batch, which interactive work passes)",
    )
    submit.add_argument(
        "--concurrency", type=int, default=16, help="requests in flight (default: 16)"
    )
    submit.add_argument(
        "--timeout", type=float, default=300.0, help="seconds per prompt (default: 300)"
    )
    submit.add_argument(
        "--server-side",
        action="store_true",
        help="send the prompts as one batch of OpenAI's Batch API: the server makes the jobs,"
        " this command shows the batch's progress and downloads its output (default: submit"
        " each prompt from here)",
    )
    submit.set_defaults(run=_guarded(_run_submit))

    _register_job_commands(commands, common)


def _register_job_commands(
    commands: argparse._SubParsersAction[Any], common: argparse.ArgumentParser
) -> None:
    """status, cancel and retry: commands on one job."""
    status = commands.add_parser(
        "status",
        parents=[common],
        help="print a request's job view as JSON",
        description=f"Print the job view of REQUEST_ID (status, attempts, output or error). "
        f"{_CONFIG_HELP}",
    )
    status.add_argument("request_id", metavar="REQUEST_ID")
    status.set_defaults(run=_guarded(_run_status))

    cancel = commands.add_parser(
        "cancel",
        parents=[common],
        help="cancel a request",
        description="Cancel REQUEST_ID and print the answer as JSON: status CANCELLED if it had "
        "not started; else cancelling true, and the job stops within moments with its partial "
        "text (`headrace status` shows it). A finished request is an error naming its status. "
        f"{_CONFIG_HELP}",
    )
    cancel.add_argument("request_id", metavar="REQUEST_ID")
    cancel.set_defaults(run=_guarded(_run_cancel))

    retry = commands.add_parser(
        "retry",
        parents=[common],
        help="queue a FAILED or TIMED_OUT request again",
        description="Queue REQUEST_ID again under the same id, with a new allowance of attempts "
        "and a new stream, and print the answer as JSON. Any other status is an error naming "
        f"it. {_CONFIG_HELP}",
    )
    retry.add_argument("request_id", metavar="REQUEST_ID")
    retry.set_defaults(run=_guarded(_run_retry))


def fail(message: str) -> int:
    print(f"headrace: {message}", file=sys.stderr, flush=True)
    return 1


def describe(error: HeadraceClientError) -> str:
    if isinstance(error, CompletionTimeoutError) and error.request_id:
        return (
            f"request {error.request_id} did not finish within --timeout; it goes on:"
            f" `headrace status {error.request_id}` shows it"
        )
    if error.status_code is None:
        return error.detail
    return f"{error.detail} (HTTP {error.status_code})"


def _guarded(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    @functools.wraps(run)
    def guarded(args: argparse.Namespace) -> int:
        configure(base_url=args.base_url, api_key=args.api_key)
        try:
            return run(args)
        except HeadraceClientError as e:
            return fail(describe(e))
        except (CliError, InputFileError, OSError) as e:
            return fail(str(e))
        except KeyboardInterrupt:
            raise
        except Exception as e:
            if os.environ.get("HEADRACE_DEBUG"):
                raise
            return fail(f"unexpected error: {e!r} (HEADRACE_DEBUG=1 shows the traceback)")

    return guarded


def _run_complete(args: argparse.Namespace) -> int:
    request: dict[str, Any] = {
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "timeout": args.timeout,
    }
    if not args.stream:
        response = Completion.create(args.model, args.prompt, **request)
        print(response.json() if args.json else response.output.text, flush=True)
        return 0
    wrote = False
    for event in Completion.create(args.model, args.prompt, **request, stream=True):
        if event.error is not None:
            if event.output is not None and not args.json:  # stopped early: its last delta
                print(event.output.text, end="", flush=True)
                wrote = True
            if wrote:
                print(flush=True)
            return fail(f"the completion failed: {event.error.content.error}")
        if args.json:
            print(event.json(), flush=True)
        elif event.output is not None:
            print(event.output.text, end="", flush=True)
            wrote = True
    if wrote:
        print(flush=True)
    return 0


def _run_status(args: argparse.Namespace) -> int:
    job = Completion.get(args.request_id)
    print(json.dumps(job.model_dump(mode="json", exclude_none=True), indent=2))
    return 0


def _run_cancel(args: argparse.Namespace) -> int:
    answer = Completion.cancel(args.request_id)
    print(json.dumps(answer.model_dump(mode="json"), indent=2))
    return 0


def _run_retry(args: argparse.Namespace) -> int:
    answer = Completion.retry(args.request_id)
    print(json.dumps(answer.model_dump(mode="json"), indent=2))
    return 0


def _run_server_side(args: argparse.Namespace) -> int:
    defaults = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature}
    summary = submit_server_side(
        Path(args.input),
        Path(args.output),
        model=args.model,
        defaults={k: v for k, v in defaults.items() if v is not None},
    )
    print(summary.line(), file=sys.stderr, flush=True)
    if summary.failed:
        return fail(f"{summary.failed} prompts did not succeed (see {args.output})")
    return 0


def _run_submit(args: argparse.Namespace) -> int:
    if args.server_side:
        return _run_server_side(args)
    if args.concurrency < 1:
        raise CliError("--concurrency must be at least 1")
    defaults = {
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "priority": args.priority,
    }
    summary = SubmitSummary()
    submitting = asubmit_file(
        Path(args.input),
        Path(args.output),
        model=args.model,
        defaults={k: v for k, v in defaults.items() if v is not None},
        concurrency=args.concurrency,
        timeout=args.timeout,
        summary=summary,
    )
    try:
        asyncio.run(submitting)
    except KeyboardInterrupt:
        print(f"interrupted: {summary.line()}", file=sys.stderr)
        fail(f"stopped; {args.output} holds whole lines only: re-run the same command to go on")
        return 130
    print(summary.line(), file=sys.stderr, flush=True)
    if summary.fatal is not None:
        return fail(describe(summary.fatal))
    if summary.failed or summary.not_finished:
        first = f": {describe(summary.first_error)}" if summary.first_error else ""
        return fail(f"{summary.failed + summary.not_finished} prompts did not succeed{first}")
    return 0
