"""Pausing Python's cyclic garbage collector around bulk record building.

Decoding and journey building create hundreds of thousands of small, acyclic objects; the
collector's generation-2 passes over them cost as much as the work itself (measured: decode
95k -> 146k packets/s for a 216,000-packet trace).  Reference counting still frees everything.

When the pause ends, everything the block built is still in the youngest generation, and the
first allocation after ``gc.enable()`` would start a pass over all of it (0.25-0.4 s for the
1,000,000 packets of ``netsim bench tracer``: a tenth of the analysis).  ``gc.freeze()`` then
``gc.unfreeze()`` moves every tracked object into the oldest generation instead, at no cost;
the price is that cyclic garbage made before or during the block waits for the next full
collection.  Skipped when something else has frozen objects (unfreeze would thaw them).
"""
from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["gc_paused"]


@contextmanager
def gc_paused() -> Iterator[None]:
    """Disable the cyclic collector inside the block; restore its previous state after."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            if not gc.get_freeze_count():       # into the oldest generation (see above)
                gc.freeze()
                gc.unfreeze()
            gc.enable()
