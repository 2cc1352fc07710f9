"""Engines that run a lab's containers: `own` (netsim's runtime/) and `docker` (a real dockerd
started inside the lab's host namespace)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ...errors import UsageError

if TYPE_CHECKING:
    from ..engine import Engine

__all__ = ["ENGINES", "make_engine"]

ENGINES = ("own", "docker")


def make_engine(name: str) -> "Engine":
    if name == "own":
        from .own import OwnEngine
        return OwnEngine()
    if name == "docker":
        from .docker import DockerEngine  # type: ignore[import-not-found,unused-ignore]
        return DockerEngine()  # type: ignore[no-any-return,unused-ignore]
    raise UsageError(f"--engine: unknown engine {name!r} (known: {', '.join(ENGINES)})")
