"""`python -m bench.cold_start` has a case for every Lambda handler template.yaml declares, on
the route it serves: a new handler without one would break the benchmark, not a test run."""

from __future__ import annotations

from bench.cold_cases import CASES, cases_for
from infra.template import load_template


def test_every_handler_of_the_template_has_a_cold_start_case() -> None:
    cases = cases_for(load_template())
    assert sorted(c.handler for c in cases) == sorted(c.handler for c in CASES)
