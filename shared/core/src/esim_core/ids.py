"""Derived ids: one cause always gives one id, so a redo after a crash publishes nothing new."""

from uuid import NAMESPACE_URL, UUID, uuid5


def namespace(name: str) -> UUID:
    """The namespace of one family of derived ids, named by a path (`billing`)."""
    return uuid5(NAMESPACE_URL, f"https://esim.example/{name}")


def derived_id(family: UUID, cause: str) -> str:
    """The id `cause` always gets within `family`."""
    return str(uuid5(family, cause))
