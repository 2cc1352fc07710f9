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
        """Build the bridge side in the lab's host namespace (bridge, veths, firewall rules) and
        create and start every container of the scenario on it."""

    def interfaces(self, lab: "Lab") -> dict[str, str]:
        """For each host interface the model names (plan.captured_interfaces): the name it has
        in the kernel (Docker picks its own veth names)."""

    def exec(self, container: str, argv: list[str], timeout: float) -> ExecOutcome:
        """Run argv inside a running container."""

    def pid(self, container: str) -> int:
        """Host pid of the container's first process (its /proc shows the container's netns)."""

    def logs(self, container: str) -> str:
        """What the container's main process wrote so far."""

    def stop(self, lab: "Lab") -> None:
        """Stop and delete every container this engine started (idempotent)."""
