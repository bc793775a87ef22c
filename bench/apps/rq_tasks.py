"""RQ: the job function, imported by ``rq worker`` (results are stored by default)."""

from __future__ import annotations


def noop() -> None:
    """Does nothing; RQ stores its (empty) result."""
