"""The worker's ECS scale-in protection (worker/task_protection.py): one call when it gets busy,
renewed before it lapses, cleared once idle for a while, retried when the agent fails."""

from __future__ import annotations

import asyncio

from worker.task_protection import RETRY_SECONDS, TaskProtection


class Agent:
    """Records what the worker asked; answers `ok` (the real agent: tests/e2e)."""

    def __init__(self) -> None:
        self.calls: list[tuple[bool, int | None]] = []
        self.ok = True

    async def send(self, enabled: bool, minutes: int | None) -> bool:
        self.calls.append((enabled, minutes))
        return self.ok


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def protection(agent: Agent, clock: Clock) -> TaskProtection:
    return TaskProtection(agent.send, expires_minutes=10, idle_seconds=30, clock=clock)


def test_busy_sets_it_once_for_many_jobs_and_idle_clears_it_after_the_wait() -> None:
    async def run() -> None:
        agent, clock = Agent(), Clock()
        guard = protection(agent, clock)
        assert await guard.step() is None and agent.calls == []  # idle from the start
        guard.load(1)
        assert await guard.step() == 300  # renew at half of 10 minutes
        for held in (2, 3, 1, 2, 1):  # jobs come and go: no call
            guard.load(held)
            clock.now += 1
            await guard.step()
        guard.load(0)
        clock.now += 10
        guard.load(1)  # busy again within the idle wait: still protected, no call
        await guard.step()
        guard.load(0)
        assert await guard.step() == 30
        clock.now += 29.9
        await guard.step()
        assert agent.calls == [(True, 10)]
        clock.now += 0.1
        assert await guard.step() is None
        assert agent.calls == [(True, 10), (False, None)]
        assert not guard.protected

    asyncio.run(run())


def test_a_long_busy_spell_renews_before_the_protection_lapses() -> None:
    async def run() -> None:
        agent, clock = Agent(), Clock()
        guard = protection(agent, clock)
        guard.load(4)
        await guard.step()
        clock.now += 299
        await guard.step()
        assert agent.calls == [(True, 10)]
        clock.now += 1
        assert await guard.step() == 300
        assert agent.calls == [(True, 10), (True, 10)]

    asyncio.run(run())


def test_a_failed_call_is_retried_and_never_raises() -> None:
    async def run() -> None:
        agent, clock = Agent(), Clock()
        guard = protection(agent, clock)
        agent.ok = False
        guard.load(1)
        assert await guard.step() == RETRY_SECONDS
        assert not guard.protected
        agent.ok = True
        clock.now += RETRY_SECONDS
        await guard.step()
        assert guard.protected
        guard.load(0)
        clock.now += 30
        agent.ok = False
        assert await guard.step() == RETRY_SECONDS
        assert guard.protected  # still held: asked again until the agent takes it
        agent.ok = True
        await guard.clear()
        assert not guard.protected
        assert agent.calls[-1] == (False, None)

    asyncio.run(run())


def test_the_loop_follows_load_changes_as_they_come() -> None:
    async def run() -> None:
        agent = Agent()
        guard = TaskProtection(agent.send, expires_minutes=10, idle_seconds=0.05)
        task = asyncio.create_task(guard.run())
        guard.load(1)
        for _ in range(100):
            if agent.calls:
                break
            await asyncio.sleep(0.01)
        assert agent.calls == [(True, 10)]
        guard.load(0)
        for _ in range(100):
            if len(agent.calls) == 2:
                break
            await asyncio.sleep(0.01)
        assert agent.calls == [(True, 10), (False, None)]
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(run())
