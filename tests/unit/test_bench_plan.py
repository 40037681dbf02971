"""The benchmark's engine-limit plans: what a strategy runs, whatever the order of its jobs."""

from __future__ import annotations


def test_the_engine_limit_runs_a_plan_once_whatever_the_order_within_its_batches() -> None:
    from bench.engine_limit import STRATEGIES, Strategy, plan_key
    from bench.jobs import Job

    # 32 jobs whose prompts fit one batch span: two batches of 16 by either strategy.
    jobs = [Job(i, "x " * (10 + i), 10 + i, 16 + i) for i in range(32)]
    by_policy = next(s for s in STRATEGIES if (s.order, s.batch_size) == ("policy", 16))
    by_prompt = next(s for s in STRATEGIES if (s.order, s.batch_size) == ("prompt", 16))
    in_eights = next(s for s in STRATEGIES if (s.order, s.batch_size) == ("prompt", 8))
    assert plan_key(jobs, by_policy) == plan_key(jobs, by_prompt)
    assert plan_key(jobs, by_prompt) != plan_key(jobs, in_eights)
    one_replica = Strategy(1, 2, 16, "prompt")
    assert plan_key(jobs, by_prompt) != plan_key(jobs, one_replica)


def test_on_a_gpu_the_engine_limit_is_sought_among_the_worker_s_gpu_widths_too() -> None:
    from bench.engine_limit import strategies_for
    from worker.tuning import CPU_WIDTHS, CUDA_WIDTHS

    on_gpu = {s.batch_size for s in strategies_for("cuda", explore=False)}
    on_cpu = {s.batch_size for s in strategies_for("cpu", explore=False)}
    assert set(CUDA_WIDTHS[:2]) <= on_gpu
    assert on_cpu == set(CPU_WIDTHS)
