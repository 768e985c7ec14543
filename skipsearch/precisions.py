"""Feature-extraction precisions and the extractor labels that carry them.

A precision changes the features, so it changes every FID computed from them. It is therefore part of the
extractor's name: ``inception-v3-compat@bf16`` is a feature space of its own, whose FIDs, trial rows and
cached reference statistics never mix with ``inception-v3-compat``'s. fp32, the default and the one
comparable with papers, has no suffix, so the labels of studies and caches made before precisions existed
still mean what they meant.

Light (no torch), so the spec can validate names without loading the extractors.
"""

from __future__ import annotations

PRECISIONS = ("fp32", "tf32", "bf16", "channels_last")
DEFAULT = "fp32"
SEPARATOR = "@"
CUDA_ONLY = frozenset({"tf32"})  # TensorFloat-32 is a CUDA matmul/convolution mode; a CPU has no such mode


def extractor_label(name: str, precision: str = DEFAULT) -> str:
    """``name`` for fp32, ``name@precision`` for the others."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    return name if precision == DEFAULT else f"{name}{SEPARATOR}{precision}"


def split_label(label: str) -> tuple[str, str]:
    """(extractor name, precision) of a label. ``@fp32`` is refused: fp32 has exactly one label, the plain
    name, or the same numbers would be stored under two names."""
    name, sep, precision = label.partition(SEPARATOR)
    if not sep:
        return name, DEFAULT
    faster = [p for p in PRECISIONS if p != DEFAULT]
    if precision == DEFAULT:
        raise ValueError(f"{label!r}: fp32 is the default, written as the plain name {name!r}")
    if precision not in faster:
        raise ValueError(f"unknown precision {precision!r} in {label!r}; after {SEPARATOR!r} write one of "
                         f"{', '.join(faster)} (or nothing, for fp32)")
    return name, precision
