"""Retries, polling and rate limits: jittered backoff, how a running job is watched, an AIMD
concurrency gate, RPM/TPM caps.

Everything that waits takes `sleep` and `clock` as parameters so tests never really sleep;
`Sleep` and `Clock` are their types, for every module that waits.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from glmrun import errors

Sleep = Callable[[float], None]
Clock = Callable[[], float]


@dataclass(frozen=True)
class PollPolicy:
    """How a job running on the server (an async task, a batch) is watched: a growing interval
    between looks, and an overall timeout (None: until the job ends)."""

    start_s: float = 1.0
    factor: float = 1.5
    ceiling_s: float = 10.0
    timeout_s: float | None = 600.0

    def interval(self, poll: int) -> float:
        """Seconds to wait before look number `poll` + 1 (0-based)."""
        return float(min(self.ceiling_s, self.start_s * self.factor**poll))


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait before retrying a retryable error."""

    retries: int = 4
    base_s: float = 0.5
    factor: float = 2.0
    ceiling_s: float = 30.0
    jitter: bool = True

    def wait_s(self, attempt: int, error: errors.ApiError, rng: random.Random) -> float:
        """Seconds to wait before retry number `attempt` (1-based); honours Retry-After."""
        backoff = min(self.ceiling_s, self.base_s * self.factor ** (attempt - 1))
        if self.jitter:
            backoff = backoff / 2 + rng.uniform(0, backoff / 2)
        if error.retry_after is not None:
            return max(backoff, min(error.retry_after, self.ceiling_s * 4))
        return backoff


class AdaptiveLimiter:
    """A gate on requests in flight whose width follows AIMD.

    Starts at `initial`. A 1302 answer (over the account's concurrency) sets it to the number
    of other requests in flight; other rate-limit answers halve it (at most once per
    `cooldown_s`, so one burst of 429s counts once). Outside the cooldown, every 2 × width
    successes widen it by one, up to `ceiling`: it finds the account's limit and keeps probing
    above it gently.
    """

    def __init__(
        self, initial: int, *, ceiling: int | None = None, floor: int = 1,
        cooldown_s: float = 1.0, clock: Clock = time.monotonic,
    ) -> None:
        self.ceiling = max(1, ceiling or initial)
        self.floor = max(1, min(floor, self.ceiling))
        self._width = float(max(self.floor, min(initial, self.ceiling)))
        self._in_flight = 0
        self._successes = 0
        self._last_cut = -1e18
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._cond = threading.Condition()
        self.peak_in_flight = 0
        self.cuts = 0
        self._waiting = 0

    @property
    def width(self) -> int:
        return int(self._width)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def waiting(self) -> int:
        """Threads waiting for a slot now."""
        with self._cond:
            return self._waiting

    def acquire(
        self, stop: threading.Event | None = None, deadline: float | None = None
    ) -> bool:
        """Wait for a slot; False if `stop` is set (before or while waiting) or the clock
        reaches `deadline` first."""
        with self._cond:
            while self._in_flight >= int(self._width):
                if stop is not None and stop.is_set():
                    return False
                if deadline is not None and self._clock() >= deadline:
                    return False
                self._waiting += 1
                try:
                    self._cond.wait(0.05)
                finally:
                    self._waiting -= 1
            if stop is not None and stop.is_set():
                return False
            self._in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
            return True

    def release(
        self, *, rate_limited: bool = False, ok: bool = True, over_concurrency: bool = False
    ) -> None:
        """Give a slot back, telling the gate how the request went.

        `over_concurrency` (code 1302, "too many requests in flight") narrows the gate straight
        to the number of other requests in flight: the best estimate of the account's limit.
        Other rate limits halve it. Successes widen it by one per 2 × width, never during the
        cooldown after a cut, so it probes upwards gently instead of zigzagging.
        """
        with self._cond:
            self._in_flight -= 1
            now = self._clock()
            if over_concurrency:
                self._width = max(float(self.floor), min(self._width, float(self._in_flight)))
                self._last_cut = now
                self._successes = 0
                self.cuts += 1
            elif rate_limited:
                if now - self._last_cut >= self._cooldown_s:
                    self._width = max(float(self.floor), self._width / 2)
                    self._last_cut = now
                    self._successes = 0
                    self.cuts += 1
            elif ok and now - self._last_cut >= self._cooldown_s:
                self._successes += 1
                if self._successes >= 2 * int(self._width) and self._width < self.ceiling:
                    self._width += 1
                    self._successes = 0
            self._cond.notify_all()


class RateCaps:
    """Optional requests-per-minute and tokens-per-minute caps over a sliding 60 s window."""

    def __init__(
        self, rpm: int | None = None, tpm: int | None = None, *,
        clock: Clock = time.monotonic, sleep: Sleep = time.sleep, window_s: float = 60.0,
    ) -> None:
        self.rpm, self.tpm = rpm, tpm
        self._clock, self._sleep, self._window = clock, sleep, window_s
        self._requests: deque[float] = deque()
        self._tokens: deque[tuple[float, int]] = deque()
        self._token_sum = 0
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        return bool(self.rpm or self.tpm)

    def wait_turn(self) -> None:
        """Block until one more request fits under both caps, then count it."""
        if not self.active:
            return
        while True:
            with self._lock:
                now = self._clock()
                self._expire(now)
                wait = 0.0
                if self.rpm and len(self._requests) >= self.rpm:
                    wait = self._requests[0] + self._window - now
                if self.tpm and self._token_sum >= self.tpm and self._tokens:
                    wait = max(wait, self._tokens[0][0] + self._window - now)
                if wait <= 0:
                    self._requests.append(now)
                    return
            self._sleep(min(wait, 1.0))

    def counted(self) -> int:
        """Requests counted in the current window."""
        with self._lock:
            self._expire(self._clock())
            return len(self._requests)

    def add_tokens(self, n: int) -> None:
        if not self.tpm or n <= 0:
            return
        with self._lock:
            self._tokens.append((self._clock(), n))
            self._token_sum += n

    def _expire(self, now: float) -> None:
        while self._requests and self._requests[0] <= now - self._window:
            self._requests.popleft()
        while self._tokens and self._tokens[0][0] <= now - self._window:
            self._token_sum -= self._tokens.popleft()[1]
