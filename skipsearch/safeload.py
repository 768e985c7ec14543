"""Weight files are data, never code.

``torch.load`` with ``weights_only=False`` unpickles, and a pickle can run any code: a planted or
downloaded file would run with the user's rights. skipsearch therefore loads every weight file itself with
``weights_only=True`` (only tensors and plain containers), and where a library insists on loading a file
itself (torch-fidelity opens its Inception weights with ``weights_only=False``), ``forced_weights_only``
makes that load safe too: PyTorch's ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` overrides the library's argument.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from skipsearch.errors import UserError

FORCE_ENV = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
LOAD_ERRORS = (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile,
               AttributeError, TypeError, KeyError, IndexError, UnicodeDecodeError, ImportError)


def state_dict(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """A file of named tensors, loaded without running code; anything else is refused with a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except LOAD_ERRORS as err:
        first = (str(err).strip().splitlines() or [""])[0][:300]
        raise UserError(f"{path}: not a plain file of tensors ({type(err).__name__}: {first}); {what} is loaded "
                        f"with torch.load(weights_only=True), which refuses pickled code") from None
    if not isinstance(state, dict) or not state:
        raise UserError(f"{path}: {what} must be a non-empty dict of tensors (a state dict), "
                        f"got {type(state).__name__}")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise UserError(f"{path}: {what} must map names to tensors; {len(bad)} entries do not, e.g. {bad[0]!r}")
    return state


def content_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the tensors themselves (names, dtypes, shapes, values), independent of how they were saved."""
    h = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        h.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return h.hexdigest()


@contextmanager
def forced_weights_only() -> Iterator[None]:
    """Inside the block, every ``torch.load`` in this process is ``weights_only=True``, whatever it asks."""
    before = os.environ.get(FORCE_ENV)
    os.environ[FORCE_ENV] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(FORCE_ENV, None)
        else:
            os.environ[FORCE_ENV] = before
