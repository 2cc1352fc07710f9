"""netsim's container runtime: real Linux containers from namespaces, cgroups and overlayfs.

It knows specs, namespaces, cgroups, root filesystems and processes, and nothing about
scenarios, bridges or NAT (runtime never imports netsim).
"""
from __future__ import annotations

from runtime.container import Container, ContainerProcess, Runtime
from runtime.errors import CgroupError, ContainerError, ImageError, RuntimeErrorBase, SpecError
from runtime.spec import ContainerSpec, ExecResult, IdMap, Limits

__all__ = [
    "ContainerSpec",
    "Limits",
    "IdMap",
    "ExecResult",
    "Runtime",
    "Container",
    "ContainerProcess",
    "RuntimeErrorBase",
    "ContainerError",
    "CgroupError",
    "ImageError",
    "SpecError",
]
