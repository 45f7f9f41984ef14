"""How big an object the batch handler reads, shared with `infra.config`: plain arithmetic, so
`infra/` checks a stage's settings against it without Powertools or the core.

A batch holds every object it read in memory at once (they are fetched on threads, then
classified together), so the per-object limit follows the function's memory: half of it for
the objects, split between the batch's objects; the runtime, the model and the decoded images
need the other half.
"""

from __future__ import annotations

MIB = 2**20
MAX_OBJECT_BYTES = 32 * MIB
"""Never more, whatever the memory: no camera's photo is this big."""
MIN_OBJECT_BYTES = 4 * MIB
"""The smallest per-object limit a stage may have: a 12-megapixel JPEG is 3-5 MB."""
OBJECTS_SHARE = 2
"""1/this of the memory holds the batch's objects."""


def max_object_bytes(memory_mb: int | None, batch_size: int) -> int:
    """The largest object a batch of `batch_size` objects reads in `memory_mb` (None: not on
    Lambda, no memory to follow: `MAX_OBJECT_BYTES`)."""
    if not memory_mb:
        return MAX_OBJECT_BYTES
    return min(MAX_OBJECT_BYTES, memory_mb * MIB // (OBJECTS_SHARE * max(1, batch_size)))
