"""Errors of the container runtime (runtime never imports netsim)."""
from __future__ import annotations

__all__ = ["CgroupError", "ContainerError", "ImageError", "RuntimeErrorBase", "SpecError"]


class RuntimeErrorBase(Exception):
    """Root of every error the runtime raises."""


class SpecError(RuntimeErrorBase):
    """An invalid ContainerSpec."""


class ContainerError(RuntimeErrorBase):
    """Creating, starting, exec'ing, stopping or deleting a container failed."""


class CgroupError(RuntimeErrorBase):
    """A cgroup could not be created, configured or removed."""


class ImageError(RuntimeErrorBase):
    """An image could not be built or found."""
