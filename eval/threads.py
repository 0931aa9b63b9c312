"""One thread for small work: the CPU thread pools (torch's, and BLAS's under scikit-learn) shrunk for a block.

The evaluation's work is often tiny per operation (a 32-wide ViT, a logistic regression on a thousand embeddings).
Split across threads, such operations spend their time waiting for each other, and on a busy machine far more.
Results hardly depend on the thread count; large work keeps every thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

SMALL_WORK = 1 << 22  # values (parameters, or training-set entries) below which one thread does it


@contextmanager
def one_thread_if(small: bool) -> Iterator[None]:
    """Run the block with one torch intra-op thread and one BLAS thread when ``small``; as it is otherwise."""
    if not small:
        yield
        return
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(before)
