"""One exception tree for netsim.  Every error carries enough context for one clear line."""
from __future__ import annotations

__all__ = [
    "NetsimError", "UsageError", "ScenarioError", "EnvironmentProblem", "LabError",
    "CommandError", "TraceError", "VerifyError",
]


class NetsimError(Exception):
    """Root of every error netsim raises on purpose.  ``exit_code`` is what the CLI returns."""

    exit_code = 1


class UsageError(NetsimError):
    """A bad command-line argument or option."""

    exit_code = 2


class ScenarioError(NetsimError):
    """Invalid scenario input: names the file, the line and the field."""

    exit_code = 2

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None) -> None:
        self.file, self.line, self.field, self.reason = file, line, field, message
        where = file or "<scenario>"
        if line is not None:
            where += f":{line}"
        text = f"{where}: {field}: {message}" if field else f"{where}: {message}"
        super().__init__(text)


class EnvironmentProblem(NetsimError):
    """The machine cannot run this (not root, tool or kernel feature missing); says what to do."""

    exit_code = 3


class LabError(NetsimError):
    """Building, running or tearing down a lab failed."""


class CommandError(LabError):
    """An external command (iptables-restore, tcpdump, ...) failed; carries its stderr."""

    def __init__(self, argv: list[str], returncode: int | None, stderr: str) -> None:
        self.argv, self.returncode, self.stderr = argv, returncode, stderr
        tail = stderr.strip().splitlines()[-1] if stderr.strip() else "no output"
        super().__init__(f"{' '.join(argv[:6])}{' ...' if len(argv) > 6 else ''} "
                         f"exited {returncode}: {tail}")


class TraceError(NetsimError):
    """A trace directory is missing, unreadable or of an unknown format version."""

    exit_code = 2


class VerifyError(NetsimError):
    """Verification could not be carried out (not: an expectation failed — that is a Report)."""
