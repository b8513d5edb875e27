"""Garbage collection settled for a process that serves requests.

CPython collects its young generation every 700 container allocations, and every tenth young
collection also walks the middle generation, every tenth of those the whole heap: Ray, FastAPI,
pydantic and the services leave a few hundred thousand long-lived objects there. A hold
allocates hundreds of objects, so the collector ran every few requests and a full walk stalled
every request in flight. Measured with the single-process app (``make bench``, 64
connections): holds/s 2,289 -> 3,000 and hold p99 84 -> 41 ms with the heap frozen and the
thresholds below; turning the collector off gained little more.
"""

from __future__ import annotations

import gc

# Allocations between young collections, and young (middle) collections between middle (full)
# ones. Cyclic garbage is still collected, in bigger and rarer batches.
THRESHOLDS = (100_000, 50, 100)


def settle_heap() -> None:
    """Call once a process has finished starting: what exists now (modules, apps, pools) is
    moved out of the collector's sight, and collections become rarer."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
