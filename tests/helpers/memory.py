"""What a flood of input leaves allocated: the check behind every "retains no memory" test."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable, Sequence


def retained_bytes(feed: Callable[[bytes], object], payloads: Sequence[bytes], *, warmup: int) -> int:
    """Bytes still allocated after feeding ``payloads``, once the first ``warmup`` of them filled any caches."""
    for payload in payloads[:warmup]:
        feed(payload)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for payload in payloads:
            feed(payload)
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
