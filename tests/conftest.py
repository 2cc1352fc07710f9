"""Shared test set-up: root tests are marked `root` and skip, saying why, when not root."""
from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root: it creates namespaces, cgroups and iptables rules "
                                   "(run `sudo make test`)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)
