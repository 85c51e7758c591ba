"""Login rate limiting: too many failed logins for one user from one address (or from one address for
any users) in a sliding window, and further attempts are refused, without checking the password, until
the oldest of those failures leaves the window.

In memory, per dashboard process: a restart forgets the failures (the users file's scrypt hashes are
what makes guessing slow; this stops a script from hammering the login form).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

# one address may fail this many times more often than one user from it (several people behind a proxy)
ADDRESS_FACTOR = 4
MAX_KEYS = 10_000


class LoginThrottle:
    def __init__(
        self, max_failures: int, window_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_failures = max_failures
        self.window = window_seconds
        self.clock = clock
        self._failures: collections.OrderedDict[tuple, collections.deque[float]] = collections.OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _keys(user: str, address: str | None) -> list[tuple[tuple, int]]:
        return [(("user", user.lower(), address), 1), (("address", address), ADDRESS_FACTOR)]

    def _recent(self, key: tuple, now: float) -> collections.deque[float]:
        times = self._failures.get(key)
        if times is None:
            return collections.deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def retry_after(self, user: str, address: str | None) -> float:
        """Seconds until this user may try again from this address (0: now)."""
        if self.max_failures <= 0:
            return 0.0
        now = self.clock()
        wait = 0.0
        with self._lock:
            for key, factor in self._keys(user, address):
                times = self._recent(key, now)
                limit = self.max_failures * factor
                if len(times) >= limit:
                    wait = max(wait, times[-limit] + self.window - now)
        return wait

    def failed(self, user: str, address: str | None) -> None:
        now = self.clock()
        with self._lock:
            for key, _ in self._keys(user, address):
                times = self._recent(key, now)
                times.append(now)
                self._failures[key] = times
                self._failures.move_to_end(key)
            while len(self._failures) > MAX_KEYS:
                self._failures.popitem(last=False)

    def succeeded(self, user: str, address: str | None) -> None:
        """A good password clears that user's failures from that address (not the address's count)."""
        with self._lock:
            self._failures.pop(self._keys(user, address)[0][0], None)


def describe_wait(seconds: float) -> str:
    seconds = max(1, int(seconds + 0.999))
    minutes, rest = divmod(seconds, 60)
    if not minutes:
        return f"{rest} s"
    return f"{minutes} min {rest} s" if rest else f"{minutes} min"
