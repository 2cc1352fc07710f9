"""_gc.py: the collector is paused around bulk record building and restored after; what was built
goes straight to the oldest generation (no young-generation pass over it), cycles are still
collected, and objects someone else froze stay frozen."""
from __future__ import annotations

import gc
import weakref

from netsim.trace._gc import gc_paused


class _Node:
    def __init__(self) -> None:
        self.other: object = None


def test_paused_then_restored() -> None:
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_what_was_built_is_old_and_cycles_are_still_collected() -> None:
    with gc_paused():
        built = [[n] for n in range(1000)]
        a, b = _Node(), _Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
    assert gc.get_count()[0] < 100                   # no young generation left to scan
    assert any(o is built for o in gc.get_objects(generation=2))
    del a, b
    gc.collect()
    assert gone() is None


def test_frozen_objects_stay_frozen() -> None:
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with gc_paused():
            _ = [[n] for n in range(100)]
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
