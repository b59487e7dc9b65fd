"""Errors every port to an outside system shares; free of HTTP, so ports may import them."""


class RejectedError(Exception):
    """The outside system refused the request itself: asking again the same way will not help.

    Each port names its own (`PlatformRejectedError`, `GatewayRejectedError`) on this base, so
    the status and the message read the same everywhere.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
