"""Every metric skipsearch computes, by name (``metric.report`` in a spec names them).

FID and KID are entries like any other: the objective (``evaluate.Evaluator.score``) is computed through this
table, in the study's own extractor, and so is every entry of a spec's ``metric.report``, in its extractor.
Adding a metric: a file of this package defining its ``Metric`` (``skipsearch.metrics.metric``), and one entry
in ``METRICS``.
"""

from __future__ import annotations

from skipsearch.metrics.distance import fid, kid
from skipsearch.metrics.fid_debiased import FID_DEBIASED
from skipsearch.metrics.metric import Inputs, Metric
from skipsearch.metrics.precision_recall import PRECISION_RECALL


def _fid(x: Inputs) -> dict[str, float]:
    return {"fid": fid(x.samples, x.stats)}


def _kid(x: Inputs) -> dict[str, float]:
    mean, std = kid(x.samples, x.reference, x.kid_subset_size)
    return {"kid": mean, "kid_std": std}


FID = Metric(name="fid", values=("fid",), uses=frozenset({"stats"}), compute=_fid)
KID = Metric(name="kid", values=("kid", "kid_std"), uses=frozenset({"features"}), compute=_kid)

METRICS: dict[str, Metric] = {m.name: m for m in (FID, KID, PRECISION_RECALL, FID_DEBIASED)}

# What every score computes in the study's own extractor (``metric.extractor``): its trial and held-out rows'
# fid, kid and kid_std columns. A report entry never repeats them.
OBJECTIVE = (FID, KID)


def metric(name: str) -> Metric:
    """A metric by name; an unknown one is a KeyError listing the known ones."""
    try:
        return METRICS[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(METRICS)}") from None
