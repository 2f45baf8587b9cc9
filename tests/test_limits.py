"""Retry waits, the AIMD gate and the RPM/TPM caps, with fake clocks (nothing really sleeps)."""

from __future__ import annotations

import random
import threading

from fixtures.clock import FakeClock

from glmrun import errors
from glmrun.run.limits import AdaptiveLimiter, RateCaps, RetryPolicy


def test_backoff_grows_exponentially_up_to_the_ceiling_without_jitter() -> None:
    policy = RetryPolicy(base_s=0.5, factor=2, ceiling_s=3, jitter=False)
    err = errors.ServerError("boom", status=500)
    waits = [policy.wait_s(n, err, random.Random(0)) for n in range(1, 6)]
    assert waits == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_jitter_stays_between_half_and_full_backoff() -> None:
    policy = RetryPolicy(base_s=1, factor=2, ceiling_s=100)
    rng = random.Random(1)
    err = errors.ServerError("boom")
    for attempt in range(1, 6):
        full = 2 ** (attempt - 1)
        w = policy.wait_s(attempt, err, rng)
        assert full / 2 <= w <= full


def test_retry_after_is_honoured_when_longer_than_the_backoff() -> None:
    policy = RetryPolicy(base_s=0.5, jitter=False)
    err = errors.RateLimitError("slow down", status=429, code="1302", retry_after=7)
    assert policy.wait_s(1, err, random.Random(0)) == 7


def test_rate_limits_halve_the_width_once_per_cooldown_and_successes_widen_it() -> None:
    clock = FakeClock()
    gate = AdaptiveLimiter(16, cooldown_s=1.0, clock=clock)
    for _ in range(3):  # a burst of 429s within one cooldown counts once
        assert gate.acquire()
        gate.release(rate_limited=True, ok=False)
    assert gate.width == 8 and gate.cuts == 1
    clock.now += 2
    assert gate.acquire()
    gate.release(rate_limited=True, ok=False)
    assert gate.width == 4
    for _ in range(8):  # no widening during the cooldown after a cut
        assert gate.acquire()
        gate.release()
    assert gate.width == 4
    clock.now += 2
    for _ in range(8):  # then 2 × width successes widen by one
        assert gate.acquire()
        gate.release()
    assert gate.width == 5
    for _ in range(400):
        assert gate.acquire()
        gate.release()
    assert gate.width == 16  # never above the ceiling


def test_over_concurrency_narrows_to_the_requests_still_in_flight() -> None:
    gate = AdaptiveLimiter(50, clock=FakeClock())
    for _ in range(21):
        assert gate.acquire()
    gate.release(rate_limited=True, ok=False, over_concurrency=True)  # 20 others in flight
    assert gate.width == 20 and gate.cuts == 1


def test_gate_blocks_beyond_its_width_and_stop_releases_waiters() -> None:
    gate = AdaptiveLimiter(1)
    assert gate.acquire()
    stop = threading.Event()
    result: list[bool] = []
    t = threading.Thread(target=lambda: result.append(gate.acquire(stop)))
    t.start()
    t.join(0.3)
    assert t.is_alive() and gate.in_flight == 1
    stop.set()
    t.join(2)
    assert result == [False]


def test_rpm_cap_waits_for_the_window_to_slide() -> None:
    clock = FakeClock()
    caps = RateCaps(rpm=2, clock=clock, sleep=clock.sleep)
    caps.wait_turn()
    caps.wait_turn()
    assert clock.slept == []
    caps.wait_turn()  # third request in the same minute waits ~60 s (in ≤1 s naps)
    assert 59.9 <= sum(clock.slept) <= 60.1


def test_tpm_cap_counts_tokens() -> None:
    clock = FakeClock()
    caps = RateCaps(tpm=100, clock=clock, sleep=clock.sleep)
    caps.wait_turn()
    caps.add_tokens(150)
    caps.wait_turn()
    assert 59.9 <= sum(clock.slept) <= 60.1
