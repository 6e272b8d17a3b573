"""The admission gate: a slot, a queue in arrival order, 429 when full, 503 when shutting down."""

from __future__ import annotations

import asyncio

import pytest

from mucode_env.serve.admission import Admission, Busy, ShuttingDown


def run(coro):
    return asyncio.run(coro)


def test_full_means_busy_at_once_without_a_queue():
    async def scenario():
        gate = Admission(max_concurrent=2, max_queue=0, queue_timeout_s=10)
        await gate.acquire()
        await gate.acquire()
        with pytest.raises(Busy, match="2 requests running and 0 queued"):
            await gate.acquire()
        gate.release()
        await gate.acquire()  # the freed slot is usable again
        assert gate.running == 2 and gate.counts["busy"] == 1

    run(scenario())


def test_waiters_get_slots_in_arrival_order_and_a_full_queue_is_busy():
    async def scenario():
        gate = Admission(max_concurrent=1, max_queue=2, queue_timeout_s=10)
        await gate.acquire()
        order = []

        async def waiter(name):
            await gate.acquire()
            order.append(name)

        tasks = [asyncio.create_task(waiter(n)) for n in ("a", "b")]
        await asyncio.sleep(0.01)
        assert gate.waiting == 2
        with pytest.raises(Busy, match="queued"):
            await gate.acquire()
        gate.release()
        await asyncio.sleep(0.01)
        gate.release()
        await asyncio.gather(*tasks)
        assert order == ["a", "b"] and gate.running == 1 and gate.waiting == 0

    run(scenario())


def test_a_wait_longer_than_the_queue_timeout_is_busy():
    async def scenario():
        gate = Admission(max_concurrent=1, max_queue=5, queue_timeout_s=0.05)
        await gate.acquire()
        with pytest.raises(Busy, match="no slot became free within 0.05 s"):
            await gate.acquire()
        assert gate.waiting == 0 and gate.running == 1  # the timed-out waiter left no trace
        gate.release()
        assert gate.idle

    run(scenario())


def test_draining_refuses_new_work_and_expiry_fails_the_queue():
    async def scenario():
        gate = Admission(max_concurrent=1, max_queue=5, queue_timeout_s=10)
        await gate.acquire()
        queued = asyncio.create_task(gate.acquire())
        await asyncio.sleep(0.01)
        gate.begin_drain()
        with pytest.raises(ShuttingDown):
            await gate.acquire()
        expired = gate.expired()
        gate.expire()
        with pytest.raises(ShuttingDown, match="before this request got a slot"):
            await queued
        assert expired.done() and gate.counts["shutting_down"] == 1

    run(scenario())
