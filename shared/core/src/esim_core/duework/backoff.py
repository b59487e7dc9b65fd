"""Exponential backoff with jitter: the one formula for every wait between two tries."""

import random

#: More growth than any wait here can use: 2 ** 64 times the first wait is beyond every cap.
_MOST_DOUBLINGS = 64


def backoff(
    attempt: int, base_s: float, cap_s: float, *, factor: float = 2.0, jitter: float = 0.0
) -> float:
    """The wait after the `attempt`-th failure in a row (counted from 1).

    `base_s * factor ** (attempt - 1)`, at most `cap_s`, then shortened at random by up to
    `jitter` of itself, so that many rows that failed together do not come back together.

    Args:
        attempt: failures in a row so far; below 1 counts as 1.
        base_s: the first wait.
        cap_s: the longest wait.
        factor: how much each further wait grows.
        jitter: the share of the wait that may be cut at random: 0 waits exactly, 1 is
            "full jitter" (anything from nothing to the whole wait), a fraction between keeps
            a floor of `1 - jitter` of the wait that a caller can promise.
    """
    # However many failures in a row (a loop that waits out a long outage counts on): the
    # power is taken no further than any cap needs, so it never overflows a float.
    delay = min(cap_s, base_s * factor ** min(max(0, attempt - 1), _MOST_DOUBLINGS))
    return delay * random.uniform(1.0 - jitter, 1.0) if jitter else delay
