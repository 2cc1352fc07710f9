"""The narrow interface between a lab and whatever runs its containers."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .lab import Lab

__all__ = ["Engine", "ExecOutcome"]


@dataclass(frozen=True)
class ExecOutcome:
    returncode: int
    stdout: str
    stderr: str
    duration_s: float


class Engine(Protocol):
    name: str

    def start(self, lab: "Lab") -> None:
        """Create and start every container of the lab's scenario in its network namespace."""

    def exec(self, container: str, argv: list[str], timeout: float) -> ExecOutcome:
        """Run argv inside a running container."""

    def pid(self, container: str) -> int:
        """Host pid of the container's first process (its /proc shows the container's netns)."""

    def logs(self, container: str) -> str:
        """What the container's main process wrote so far."""

    def stop(self, lab: "Lab") -> None:
        """Stop and delete every container this engine started (idempotent)."""
