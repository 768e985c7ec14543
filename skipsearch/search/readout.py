"""What a reader asks a study's method before it shows the study's numbers.

The end-of-run tables, ``best``, the verdict and the report show a method's further references (Diff-Tuning's
source FID) and its objectives (a Pareto front) without naming either: they hold a ``Readout``, which the method
fills in (``Method.objectives``, ``metric_names``, ``references``, ``fidelity``). A reader without a spec (a
frame handed over alone) uses the default: one objective, FID, no further reference.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from skipsearch.spec import Spec


@dataclass(frozen=True, kw_only=True)
class Readout:
    """A study's columns as its method names them.

    - ``objectives``: the trials frame's columns Optuna minimises, in order; ``names`` as a reader reads them;
    - ``references``: each further reference's domain -> what its FID measures (columns ``{domain}_fid``, ...);
    - ``unit``: what a trial's rungs count (samples, or training steps; asked only at the end of a run).
    """

    objectives: tuple[str, ...] = ("fid",)
    names: tuple[str, ...] = ("FID",)
    references: Mapping[str, str] = field(default_factory=dict)
    unit: Literal["samples", "steps"] = "samples"

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def front(self) -> tuple[str, ...]:
        """The columns a Pareto front trades off: the objectives, then each further reference's FID (a study that
        minimises target FID alone still shows what its trials forgot); () where that is one column only."""
        columns = tuple(dict.fromkeys([*self.objectives, *(f"{d}_fid" for d in self.references)]))
        return columns if len(columns) > 1 else ()

    def name_of(self, column: str) -> str:
        """A column of the front as a table heads it: an objective by its name, a further reference's FID as
        ``{domain} FID``."""
        names = dict(zip(self.objectives, self.names)) | {f"{d}_fid": f"{d} FID" for d in self.references
                                                          if f"{d}_fid" not in self.objectives}
        return names.get(column, column)


def readout(spec: Spec, *, unit: bool = False) -> Readout:
    """The readout of a study of ``spec``, from its method. ``unit``: also ask what its rungs count (the method's
    ``fidelity``), which may load the trial's machinery (torch): the end of a run asks, a reader (``best``,
    ``export``, the report) never needs it and stays light."""
    from skipsearch.methods import method_for

    method = method_for(spec.kind)
    return Readout(objectives=tuple(method.objectives(spec)), names=tuple(method.metric_names(spec)),
                   references=dict(method.references(spec)),
                   unit=method.fidelity(spec).unit if unit else "samples")
