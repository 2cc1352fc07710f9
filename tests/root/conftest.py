from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from hermetic import snapshot  # noqa: E402


@pytest.fixture(autouse=True)
def _root_namespace_untouched(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every root test: the root namespace and the cgroup tree are as before it ran."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        yield
        return
    before = snapshot()
    yield
    after = snapshot()
    for key in before:
        assert after[key] == before[key], f"{request.node.name} changed the machine's {key}"
