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

    def begin(self, user: str, address: str | None) -> tuple[float, float | None]:
        """Check and record in one step, so parallel guesses cannot all pass the check before any is
        counted. (wait, None): refused, try again in `wait` seconds, nothing recorded. (0, stamp): this
        attempt may check the password and counts as a failure until `succeeded(user, address, stamp)`."""
        if self.max_failures <= 0:
            return 0.0, None
        now = self.clock()
        with self._lock:
            wait = 0.0
            for key, factor in self._keys(user, address):
                times = self._recent(key, now)
                limit = self.max_failures * factor
                if len(times) >= limit:
                    wait = max(wait, times[-limit] + self.window - now)
            if wait > 0:
                return wait, None
            for key, _ in self._keys(user, address):
                times = self._recent(key, now)
                times.append(now)
                self._failures[key] = times
                self._failures.move_to_end(key)
            while len(self._failures) > MAX_KEYS:
                self._failures.popitem(last=False)
        return 0.0, now

    def succeeded(self, user: str, address: str | None, stamp: float | None) -> None:
        """A good password clears that user's failures from that address, and takes this attempt back
        from the address's count (its other failures stay)."""
        if stamp is None:
            return
        with self._lock:
            (user_key, _), (address_key, _) = self._keys(user, address)
            self._failures.pop(user_key, None)
            times = self._failures.get(address_key)
            if times is not None and stamp in times:
                times.remove(stamp)


def describe_wait(seconds: float) -> str:
    seconds = max(1, int(seconds + 0.999))
    minutes, rest = divmod(seconds, 60)
    if not minutes:
        return f"{rest} s"
    return f"{minutes} min {rest} s" if rest else f"{minutes} min"
