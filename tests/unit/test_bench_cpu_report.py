"""bench.worker_cpu's report: no ceiling is printed from a split that came out negative."""

from __future__ import annotations

import pytest

from bench.cpu_report import Phase, Round, print_verdicts, rows

JOBS = 24


def phase(name: str, tokens: int, worker_cpu_s: float) -> Phase:
    return Phase(
        name, tokens, makespan_s=1.0, worker_cpu_s=worker_cpu_s, loop_cpu_s=0.1, others_cpu_s=0.5
    )


def report(short_cpu_s: float, long_cpu_s: float, capsys: pytest.CaptureFixture[str]) -> str:
    """The verdicts for jobs of 40 and 160 tokens; the engine spends 50 us a token."""
    plain = phase("unstreamed", 40 * JOBS, short_cpu_s)
    longer = phase("unstreamed, jobs 4x longer", 160 * JOBS, long_cpu_s)
    table = {"phases": rows([Round([plain, longer], [50e-6, 50e-6], engine_rate=20_000)])}
    print_verdicts(table, table, "unmeasured", JOBS)
    return capsys.readouterr().out


def test_a_split_into_a_part_per_token_and_one_per_job_gives_its_bound(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # 20 us a token and 2 ms a job above the engine: 70 us a token at 40 tokens, 32.5 at 160.
    out = report(JOBS * (40 * 70e-6 + 2e-3), JOBS * (160 * 70e-6 + 2e-3), capsys)
    assert "about 20 us per token and 2.0 ms per job" in out
    assert "at most 50,000 tokens/s of jobs long enough" in out


def test_a_negative_split_prints_no_bound(capsys: pytest.CaptureFixture[str]) -> None:
    # Longer jobs cost more per token than short ones: the per-job part comes out negative.
    out = report(JOBS * 40 * 60e-6, JOBS * 160 * 80e-6, capsys)
    assert "the split is within the noise of this run" in out
    assert "at most 1,000,000,000" not in out and "jobs long enough" not in out
