"""What a class-conditional UNet's label embedding receives, call by call: how the tests see which labels reach
the network (tests/test_sample.py, tests/test_train_classcond.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def labels_seen(classes: int) -> Iterator[list[list[int]]]:
    """The labels every ``nn.Embedding`` of ``classes`` entries is called with inside the block, one list per
    call (a global forward pre-hook, removed on leaving)."""
    seen: list[list[int]] = []

    def record(module, args):
        if isinstance(module, torch.nn.Embedding) and module.num_embeddings == classes:
            seen.append(args[0].tolist())

    handle = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        yield seen
    finally:
        handle.remove()
