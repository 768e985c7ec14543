"""Improved precision and recall (Kynkäänniemi et al., NeurIPS 2019), on the features of one extractor.

FID mixes two failures into one number: samples that look like no real image (low precision) and real modes
the model never draws (low recall). Each set's manifold is approximated by balls around its points, of radius
the distance to the point's k-th nearest neighbour in its own set (k = 3, the paper's choice). Precision is the
fraction of samples inside the reference's manifold, recall the fraction of reference points inside the
samples'. A point on a ball's boundary counts as inside.

The reference side is every image of the reference set (``Reference.features``), however many samples are
scored: the radii depend on how many points a set has, so precisions and recalls compare between trials at
one N against one reference, as FIDs do, not across N. Distances are exact (no ``|a|^2 + |b|^2 - 2ab``
shortcut, whose rounding would move points across a boundary) and taken a block of rows at a time, so memory
stays at ``BLOCK_BYTES`` whatever the set sizes.
"""

from __future__ import annotations

import torch

from skipsearch.metrics.metric import Inputs, Metric

K = 3
BLOCK_BYTES = 64 * 2**20  # one block of the distance matrix


def _blocks(rows: int, cols: int) -> int:
    """Rows per block, so that a (rows, cols) float64 block fits ``BLOCK_BYTES``."""
    return max(1, BLOCK_BYTES // (8 * max(cols, 1)))


def _distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def knn_radii(points: torch.Tensor, k: int = K) -> torch.Tensor:
    """Each point's distance to its k-th nearest other point of the same set."""
    if len(points) <= k:
        raise ValueError(f"a k-NN radius with k = {k} needs more than {k} points, got {len(points)}")
    step = _blocks(len(points), len(points))
    out = []
    for start in range(0, len(points), step):
        d = _distances(points[start : start + step], points)
        out.append(d.topk(k + 1, dim=1, largest=False).values[:, k])  # the smallest is the point itself (0)
    return torch.cat(out)


def covered(queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """Whether each query lies in at least one ball (centre, radius): a boolean per query."""
    step = _blocks(len(queries), len(centres))
    out = []
    for start in range(0, len(queries), step):
        out.append((_distances(queries[start : start + step], centres) <= radii).any(dim=1))
    return torch.cat(out)


def precision_recall(samples: torch.Tensor, reference: torch.Tensor, k: int = K) -> tuple[float, float]:
    """(precision, recall) of the samples' features against the reference's, both (N, d), on ``reference``'s
    device in float64."""
    real = reference.to(torch.float64)
    fake = samples.to(device=real.device, dtype=torch.float64)
    precision = covered(fake, real, knn_radii(real, k)).double().mean()
    recall = covered(real, fake, knn_radii(fake, k)).double().mean()
    return float(precision), float(recall)


def _compute(x: Inputs) -> dict[str, float]:
    precision, recall = precision_recall(x.samples, x.reference)
    return {"precision": precision, "recall": recall}


PRECISION_RECALL = Metric(name="precision_recall", values=("precision", "recall"), uses=frozenset({"features"}),
                          compute=_compute)
