"""One chaos run: stack, traffic, faults, bounded wait, audit."""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headrace.dev.stack import LocalStack, ensure_dev_model
from infra.provision import AwsClients
from tests.suites.chaos import audit
from tests.suites.chaos.audit import Findings
from tests.suites.chaos.faults import Chaos, FaultLog, plan_faults
from tests.suites.chaos.followers import Followed, FollowerHub
from tests.suites.chaos.report import detail_lines, report_lines, write_json
from tests.suites.chaos.traffic import Submission, Submitter, wait_until_final
from tests.suites.chaos.workload import Expected, build_workload, greedy_expectations
from tests.suites.stack import aws_clients, run_dir, start_stack

# Left for the audit and the shutdown at the end of the time budget.
AUDIT_RESERVE_SECONDS = 60.0
# After the last job ends: time for the followers to read the last events posted before they
# are stopped, and with a zombie, for its late writes once resumed to land before the audit (a
# killed worker writes nothing more; a SIGTERMed one hands back what it does not finish).
SETTLE_SECONDS = 1.0
ZOMBIE_SETTLE_SECONDS = 3.0
# A message the redrive moved after its third receive (a killed worker's, mostly) is looked at
# within seconds, as the short visibility timeout has the rest retried; the default 30 s period
# would leave the run waiting on the check, not on the workers.
CHAOS_SETTINGS = {"HEADRACE_DEAD_LETTER_CHECK_SECONDS": "2"}


@dataclass
class Clock:
    started: float
    budget: float

    def left(self) -> float:
        return self.started + self.budget - time.monotonic()

    def past(self, reserve: float) -> bool:
        return self.left() < reserve


def run(args: argparse.Namespace) -> int:
    clock = Clock(time.monotonic(), args.budget)
    out = run_dir("chaos", args.out)
    print(f"chaos: logs and report.json in {out}", flush=True)
    specs = build_workload(args.jobs, follow_every=args.follow_every, seed=args.seed)
    model_dir = ensure_dev_model(args.home)
    expected = greedy_expectations(model_dir, {s.greedy_key for s in specs if s.greedy})
    stack = start_stack(args.home, out, workers=args.workers, settings=CHAOS_SETTINGS)
    print(f"chaos: stack up in {time.monotonic() - clock.started:.1f}s ({stack.base_url})")
    hub = FollowerHub(stack.ws_url, stack.api_key)
    submitter = Submitter(stack.base_url, stack.api_key, hub, threads=args.threads)
    log = FaultLog(time.monotonic())
    chaos = Chaos(
        stack,
        log,
        rng=random.Random(args.seed),
        interval=args.kill_every,
        freeze_seconds=args.freeze,
    )
    aws = aws_clients(stack)
    try:
        hub.start()
        futures = submitter.start(specs, rate=args.rate)
        began = time.time()
        chaos.run(plan_faults(args.kills, zombie=args.zombie), give_up=lambda: clock.past(180))
        submissions = []
        for future in futures:
            try:
                submissions.append(future.result(timeout=max(1.0, clock.left() - 120)))
            except TimeoutError:
                break
        submitted = [s for s in submissions if s.request_id]
        print(f"chaos: {len(submitted)} jobs accepted; waiting for them to end", flush=True)
        assert stack.resources is not None
        wait_ends = time.monotonic() + args.wait
        wait_until_final(
            aws,
            stack.resources.table_name,
            [str(s.request_id) for s in submitted],
            give_up=lambda: clock.past(AUDIT_RESERVE_SECONDS) or time.monotonic() > wait_ends,
        )
        time.sleep(ZOMBIE_SETTLE_SECONDS if args.zombie else SETTLE_SECONDS)
        hub.stop()
        found = _audit(stack, aws, submissions, expected)
        found.refused.update(s.refusal for s in submissions if s.refusal)
        if len(submissions) < len(specs):
            found.refused["never sent (time budget)"] += len(specs) - len(submissions)
    finally:
        chaos.thaw()
        hub.stop()
        submitter.close()
        aws.close()
        _stop(stack)
    doors = Counter[str](s.door for s in specs)
    seconds = max(0.0, found.last_finished_at - began)
    _summary(found, args, chaos, doors=doors, seconds=seconds, followed=len(hub.followed))
    extra = {"faults": log.lines, "followed": [_followed_record(f) for f in hub.followed]}
    return _details(found, args, out=out, extra=extra)


def _stop(stack: LocalStack) -> None:
    """Every live worker told to stop at once (each lets its long poll end and releases what
    it holds), then the stack, which waits for them in turn."""
    for worker in stack.workers:
        if worker.poll() is None:
            worker.terminate()
    stack.stop()


def _summary(
    found: Findings,
    args: argparse.Namespace,
    chaos: Chaos,
    *,
    doors: Counter[str],
    seconds: float,
    followed: int,
) -> None:
    print()
    mode = "burst" if args.rate <= 0 else f"{args.rate:g} jobs/s"
    faults = ", ".join(f"{n} {name}" for name, n in chaos.counts.items())
    print(
        f"chaos report: {args.jobs} jobs, {mode} from {args.threads} threads,"
        f" {args.workers} workers, faults done: {faults}, seed {args.seed}"
    )
    for line in report_lines(found, doors=doors, seconds=seconds, followed=followed):
        print(line)


def _followed_record(followed: Followed) -> dict[str, Any]:
    """What report.json keeps of a followed stream, to look into a delivered mismatch."""
    return {
        "request_id": followed.request_id,
        "door": followed.door,
        "seqs_delivered": [frame.get("seq") for frame in followed.frames],
        "last_delivered": followed.has_last(),
        "problems": followed.problems,
    }


def _audit(
    stack: LocalStack,
    aws: AwsClients,
    submissions: list[Submission],
    expected: dict[tuple[str, int], Expected],
) -> Findings:
    assert stack.resources is not None
    table = stack.resources.table_name
    found = Findings(submitted=sum(1 for s in submissions if s.request_id))
    accepted = {str(s.request_id): s for s in submissions if s.request_id}
    # The dead-letter queue is drained meanwhile: it ends on two empty long polls.
    with ThreadPoolExecutor(max_workers=1) as pool:
        dlq = pool.submit(audit.drain_dlq, aws, stack.resources)
        views = audit.fetch_views(stack.base_url, stack.api_key, list(accepted))
        stored = audit.fetch_stored_events(aws, table, list(accepted))
    for request_id, submission in accepted.items():
        view = views[request_id]
        if view is None:
            found.lost.append(f"{request_id}: 404 after a 202/ack ({submission.spec.door})")
            continue
        audit.check_job(submission, view, expected, found)
        audit.check_stored_stream(view, stored[request_id], found)
        if submission.followed is not None:
            audit.check_followed(submission.followed, view, found)
    _audit_dlq(dlq.result(), views, found)
    found.queue_left = audit.messages_in(aws, stack.resources.queue_url)
    return found


def _audit_dlq(bodies: list[str], views: dict[str, object], found: Findings) -> None:
    found.dlq_messages = len(bodies)
    for body in bodies:
        request_id = audit.dlq_request_id(body)
        view = views.get(request_id) if request_id else None
        status = view.get("status") if isinstance(view, dict) else None
        if status in ("SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT"):
            found.dlq_final[str(status)] += 1
        else:
            found.dlq_not_final.append(f"{request_id or body[:60]!r}: job {status or 'unknown'}")


def _details(found: Findings, args: argparse.Namespace, *, out: Path, extra: dict[str, Any]) -> int:
    print("  faults:" + ("" if extra["faults"] else " none"))
    for line in extra["faults"]:
        print(f"    {line}")
    for line in detail_lines(found):
        print(line)
    broken = found.broken()
    write_json(out / "report.json", found, {"args": vars(args), **extra})
    print(f"chaos: {'FAIL' if broken else 'PASS'} ({broken} lost/stuck/double/mismatch findings)")
    print(f"chaos: report {out / 'report.json'}, logs {out / 'logs'}")
    return 1 if broken else 0
