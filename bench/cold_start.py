"""What a cold start costs each Lambda handler, against what boto3 alone costs.

`python -m bench.cold_start [--runs 7] [--root DIR]` starts the local stack (no worker), then
takes, for every handler of template.yaml, samples in fresh interpreters (`bench/cold_probe.py`):
the import of the handler module, then its first call with a real API Gateway event for its
route. Next to each sample, a baseline in a fresh interpreter: `import boto3`, one session, the
clients the handler's first call creates (dynamodb and sqs), and the same first AWS call. The
ratio total/baseline is what the handler's code costs on top of boto3 (1.0: nothing).

`--root DIR` imports the handlers from another checkout (DIR first on sys.path, cwd DIR),
against the stack of this tree.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from bench.cold_cases import Case, StackFacts, cases_for
from bench.cold_probe import RESULT_PREFIX
from bench.procinfo import machine
from headrace.core import routes
from headrace.core.aws import botocore_config
from headrace.core.settings import Settings
from headrace.dev.model import DEV_MODEL_NAME
from headrace.dev.moto import MOTO_CREDENTIALS
from headrace.dev.routes import RouteTable
from headrace.dev.stack import LocalStack, StackOptions
from infra.template import http_routes, load_template, websocket_stage

ROOT = Path(__file__).resolve().parent.parent
PROBE = Path(__file__).resolve().parent / "cold_probe.py"
LEGEND = (
    "total = import + first call; boto3 baseline = import boto3, one session, the dynamodb\n"
    "and sqs clients, the handler's first AWS call (none for $default);\n"
    "ratio = median total / median baseline"
)
# The options headrace.core.aws.botocore_config sets, which the baseline's clients get too.
CLIENT_OPTIONS = ("region_name", "retries", "connect_timeout", "read_timeout")


@dataclass
class Samples:
    """One handler's samples, each next to the baseline sample taken right after it: what
    `cold_probe` printed (times in ms, modules loaded)."""

    case: Case
    handler: list[dict[str, Any]] = field(default_factory=list)
    baseline: list[dict[str, Any]] = field(default_factory=list)

    def row(self) -> dict[str, float]:
        total = statistics.median(s["import_ms"] + s["call_ms"] for s in self.handler)
        baseline = statistics.median(s["clients_ms"] + s["call_ms"] for s in self.baseline)
        return {
            "import_ms": statistics.median(s["import_ms"] for s in self.handler),
            "call_ms": statistics.median(s["call_ms"] for s in self.handler),
            "total_ms": total,
            "baseline_ms": baseline,
            "ratio": total / baseline,
        }

    def results(self) -> dict[str, Any]:
        return {
            "route": self.case.route,
            **self.row(),
            "handler_samples": self.handler,
            "baseline_samples": self.baseline,
        }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.cold_start", description=__doc__)
    parser.add_argument("--runs", type=int, default=7, help="samples per handler (default 7)")
    parser.add_argument(
        "--root", type=Path, default=ROOT, help="checkout to import the handlers from"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/out"), help="output folder")
    return parser.parse_args(argv)


def submit_job(stack: LocalStack) -> str:
    """A job for the status and subscribe events, submitted through the gateway."""
    body = json.dumps({"model": DEV_MODEL_NAME, "prompt": "a job to look at", "max_new_tokens": 8})
    request = urllib.request.Request(
        stack.base_url + routes.COMPLETIONS_ASYNC,
        data=body.encode(),
        headers={"x-api-key": stack.api_key, "content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return str(json.loads(response.read())["request_id"])


def stack_facts(stack: LocalStack, template: dict[str, Any], dynamodb: Any) -> StackFacts:
    assert stack.resources is not None
    return StackFacts(
        host=stack.base_url.removeprefix("http://"),
        api_key=stack.api_key,
        table_name=stack.resources.table_name,
        model=DEV_MODEL_NAME,
        management_url=stack.base_url + "/ws",
        job_id=submit_job(stack),
        dynamodb=dynamodb,
        route_table=RouteTable(http_routes(template)),
        stage=websocket_stage(template),
    )


def baseline_spec(stack: LocalStack, first_call: dict[str, Any] | None) -> dict[str, Any]:
    """The baseline: what a handler written straight against boto3 would do on a cold start,
    with the same client settings as headrace.core.aws (region, retries, timeouts)."""
    assert stack.resources is not None
    config = botocore_config(Settings(region=stack.resources.region))
    return {
        "mode": "baseline",
        "region": stack.resources.region,
        "endpoint_url": stack.aws_endpoint_url,
        "config": {name: getattr(config, name) for name in CLIENT_OPTIONS},
        # The clients every handler's services build; the WebSocket management client is built
        # only when a handler posts to a connection, which none of these first calls does.
        "clients": ["dynamodb", "sqs"],
        "call": first_call,
    }


def probe(spec: dict[str, Any], env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """One sample in a fresh interpreter (-I: no user site, no PYTHON* variables)."""
    done = subprocess.run(
        [sys.executable, "-I", str(PROBE)],
        input=json.dumps(spec),
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    results = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not results:
        raise RuntimeError(f"probe failed ({done.returncode}):\n{done.stderr[-4000:]}")
    sample: dict[str, Any] = json.loads(results[-1].removeprefix(RESULT_PREFIX))
    return sample


def sample_pair(
    case: Case, stack: LocalStack, facts: StackFacts, root: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The handler's sample, then the baseline's, for one fresh request."""
    request = case.build(facts)
    env = stack.env(case.env)
    spec = {"mode": "handler", "root": str(root), "handler": case.handler, "event": request.event}
    handler = probe(spec, env, root)
    if handler["status"] != case.expected_status:
        raise RuntimeError(f"{case.handler} answered {handler['status']}")
    if not Path(handler["module_file"]).resolve().is_relative_to(root):
        raise RuntimeError(f"{case.handler} came from {handler['module_file']}, not {root}")
    baseline = probe(baseline_spec(stack, request.first_call), env, root)
    if request.first_call is not None and baseline["status"] != 200:
        raise RuntimeError(f"the baseline's call answered {baseline['status']}")
    return handler, baseline


def measure(
    cases: list[Case], stack: LocalStack, facts: StackFacts, root: Path, runs: int
) -> list[Samples]:
    samples = [Samples(c) for c in cases]
    # A first round, not counted: bytecode compiled, files in the page cache, moto warmed up.
    for case in cases:
        sample_pair(case, stack, facts, root)
    # Rounds over all handlers rather than all samples of one handler after another: a spell of
    # load on the shared machine then touches every handler and its baseline alike.
    for run in range(runs):
        print(f"run {run + 1}/{runs}", flush=True)
        for one in samples:
            handler, baseline = sample_pair(one.case, stack, facts, root)
            one.handler.append(handler)
            one.baseline.append(baseline)
    return samples


def describe(root: Path) -> str:
    """The checkout and its commit (a "+" when its files differ from the commit)."""
    git = ["git", "-C", str(root)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        return str(root)
    dirty = subprocess.run([*git, "diff", "--quiet", "HEAD"], capture_output=True).returncode
    return f"{root} ({head.stdout.strip()}{'+' if dirty else ''})"


def table(samples: list[Samples]) -> str:
    header = ("handler", "import ms", "first call ms", "total ms", "boto3 baseline ms", "ratio")
    rows = [header]
    for one in samples:
        row = one.row()
        rows.append(
            (
                one.case.handler,
                f"{row['import_ms']:.0f}",
                f"{row['call_ms']:.0f}",
                f"{row['total_ms']:.0f}",
                f"{row['baseline_ms']:.0f}",
                f"{row['ratio']:.2f}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root: Path = args.root.resolve()
    out: Path = args.out.resolve()
    work = out / "runs" / time.strftime("cold-start-%Y%m%d-%H%M%S")
    template = load_template()
    cases = cases_for(template)
    stack = LocalStack(
        StackOptions(home=(out / "home").resolve(), gateway_port=0, logs_dir=work / "logs")
    )
    print(f"handlers from {describe(root)}; {args.runs} samples each", flush=True)
    stack.start(workers=0)
    try:
        session = boto3.session.Session(region_name="us-east-1", **MOTO_CREDENTIALS)
        dynamodb = session.client("dynamodb", endpoint_url=stack.aws_endpoint_url)
        facts = stack_facts(stack, template, dynamodb)
        samples = measure(cases, stack, facts, root, args.runs)
    finally:
        stack.stop()
    print()
    print(f"Median of {args.runs} samples each; handlers from {describe(root)}")
    print(f"machine: {machine()}")
    print(table(samples))
    print(LEGEND)
    results = {
        "root": describe(root),
        "runs": args.runs,
        "machine": machine(),
        "handlers": {s.case.handler: s.results() for s in samples},
    }
    (work / "results.json").write_text(json.dumps(results, indent=2))
    print(f"results: {work / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
