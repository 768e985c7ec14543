"""What a method is: everything the driver, Ray placement, confirmation, export and the CLI ask of one.

A method (Skip-Tuning, Diff-Tuning, ...) owns its spec section, its search space and baseline, its trial
(yielding typed ``Rung``s), its ``Fidelity`` (the one description from which both the Optuna pruner and the
Ray scheduler are built), how its coefficients go on a model and come off, how they read in a table, and
what it adds to provenance. Callers hold a ``Method`` and never ask which one it is.

This module is light (pydantic and the standard library): the trial's machinery is imported by each method
where it runs, so ``skipsearch.apply`` and the registry cost nothing else.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Protocol, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from skipsearch.results import HeldOut, Rung
from skipsearch.rungs import as_batch

if TYPE_CHECKING:  # typing only: importing these here would load the science for every caller
    from torch import nn

    from skipsearch.errors import TrialError
    from skipsearch.exchange.provenance import Provenance
    from skipsearch.models import ModelInfo
    from skipsearch.spec import Spec


class Coefficients(BaseModel):
    """Searched coefficients: frozen, validated, told apart by ``family`` when read back from JSON."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
    family: str

    def describe(self) -> str:
        """One line for tables: the family, then each value (lists rounded to 3 decimals)."""
        values = self.model_dump(mode="json")
        family = values.pop("family")
        parts = [f"{k}={tuple(round(x, 3) for x in v)}" if isinstance(v, list) else f"{k}={v:.4g}"
                 for k, v in values.items()]
        return f"{family}: " + " ".join(parts)


class Removable(Protocol):
    """What ``apply`` returns: a context manager whose exit (or ``remove()``) undoes the change."""

    def remove(self) -> None: ...

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: Any) -> None: ...


@dataclass(frozen=True, kw_only=True)
class Curve:
    label: str
    x: tuple[float, ...]
    y: tuple[float, ...]


@dataclass(frozen=True, kw_only=True)
class Profile:
    """What a set of coefficients does, as curves to draw: Skip-Tuning's rho over depth (and over sigma),
    Diff-Tuning's weighting over noise level. The dashboard's artifacts and the report draw the same data."""

    title: str
    x_label: str
    y_label: str
    curves: tuple[Curve, ...]
    x_log: bool = False
    x_ticks: tuple[str, ...] = ()  # names for x = 0, 1, ... (e.g. each skip's level), when x is an index


@dataclass(frozen=True, kw_only=True)
class Fidelity:
    """How a method's trials may be stopped early; ``skipsearch.search.fidelity`` builds both the in-process
    Optuna pruner and the Ray scheduler from it, so the two never disagree.

    - ``halving``: successive halving (ASHA under Ray) from ``first`` up to ``top``, by ``factor``;
    - ``median``: stop a trial worse than the median of earlier trials at the same step, once ``startup``
      trials have finished (Optuna's MedianPruner, Ray's MedianStoppingRule);
    - ``none``: every trial runs to the end.
    """

    rule: Literal["none", "halving", "median"] = "none"
    unit: Literal["samples", "steps"] = "samples"
    first: int = 0
    top: int = 0
    factor: int = 1
    startup: int = 0


@functools.cache
def coefficients_adapter(types: tuple[type[Coefficients], ...]) -> TypeAdapter:
    """A reader of any of ``types``, told apart by their ``family`` field."""
    return TypeAdapter(types[0] if len(types) == 1 else Annotated[Union[types], Field(discriminator="family")])


class Method(ABC):
    """One method's answers to everything the search asks. Instances are registered in ``methods.METHODS``."""

    kind: ClassVar[str]  # the spec's ``kind``
    title: ClassVar[str]  # as printed: "Skip-Tuning"
    coefficient_types: ClassVar[tuple[type[Coefficients], ...]]
    # What ``skipsearch bench`` times for this method's specs, by name (``bench/suites.py`` holds them, so the
    # methods never import the benchmarks): whole trials, batched against one at a time, a trial's parts
    # against bare equivalents, and (with --ray) Ray against in-process.
    bench_suites: ClassVar[tuple[str, ...]] = ("trials", "batch_sharing", "parts", "workers")
    # The columns this method's studies add to the public frames (README, "Reading results with pandas"), by
    # frame: "trials" (``skipsearch.trials``), "confirmations" (``confirmations(..., per_seed_set=True)``) and
    # "summary" (``confirmations``), column -> pandas dtype ("str": text as a text column reads from the
    # database: pandas' string dtype, or object where no row has a value). The frames give every registered
    # method's columns to every study (NaN, None or <NA> where its method has none), so that their columns never
    # depend on the method; a shared module never names them.
    columns: ClassVar[Mapping[str, Mapping[str, str]]] = {}

    def read_coefficients(self, text: str) -> Coefficients:
        """This method's coefficients from their stored JSON. The registry (``methods.parse_coefficients``)
        reads any method's; a method reads its own here, so it never imports the registry that imports it."""
        return coefficients_adapter(self.coefficient_types).validate_json(text)

    # --- the spec ------------------------------------------------------------------------------------
    @property
    @abstractmethod
    def spec_class(self) -> type[Spec]:
        """The spec model of this method's studies (the common sections plus its own)."""

    def named_data(self, spec: Spec) -> list[tuple[str, str]]:
        """(spec field, data set name) of every data set the spec names, checked before storing."""
        return [("metric.reference", spec.metric.reference)]

    def reference_fields(self, spec: Spec) -> dict[str, str]:
        """The spec field of the data set each further reference domain is scored against (a ``Rung``'s
        ``references``), so that its scores are checked against the hash the study stored of it."""
        return {}

    def check(self, spec: Spec, info: ModelInfo, source: str) -> list[str]:
        """Checks beyond the common ones, before anything is stored; returns warnings."""
        return []

    # --- the search space ----------------------------------------------------------------------------
    @abstractmethod
    def suggest(self, trial: Any, spec: Spec, info: ModelInfo) -> Coefficients:
        """The coefficients of an Optuna trial (or FixedTrial), drawn from the spec's ranges."""

    @abstractmethod
    def baseline(self, spec: Spec, info: ModelInfo) -> dict[str, float]:
        """The Optuna parameters of the baseline, enqueued as the study's first trial."""

    def edges(self, spec: Spec, coefficients: Coefficients) -> tuple[str, ...]:
        """Each coefficient of ``coefficients`` that sits at an end of the range the spec let the search draw it
        from, in words naming the spec field ("rho_bottom = 0.5 at the lower end of search.rho_range [0.5,
        1.5]"): the search could not look beyond it, so a better point may lie there. () where none does, or
        where the method's ranges end at meaningful values (FreeU's contain "off")."""
        return ()

    def fidelity(self, spec: Spec) -> Fidelity:
        return Fidelity()

    def objectives(self, spec: Spec) -> tuple[str, ...]:
        """The values Optuna minimises, in order, as the trials frame names them: the target FID (``fid``), and
        maybe others (a further reference's ``{domain}_fid``). The Pareto front is computed over these columns."""
        return ("fid",)

    def metric_names(self, spec: Spec) -> list[str]:
        """The objectives' names as a reader sees them (optuna-dashboard shows "Objective 0" without them)."""
        return ["FID"]

    def values(self, spec: Spec, numbers: Mapping[str, float | None]) -> float | list[float]:
        """What Optuna is told of a complete trial. ``numbers``: the trial's numbers by frame column (``fid``, and
        each further reference's ``{domain}_fid``, ...); by default the ``objectives`` read from it, in order."""
        values = [numbers[name] for name in self.objectives(spec)]
        return values[0] if len(values) == 1 else values

    def references(self, spec: Spec) -> dict[str, str]:
        """The further references its trials are also scored against, beside the target (``metric.reference``):
        domain -> what its FID measures, in a word or two that readers put in brackets ("Source-domain FID
        (forgetting)" in the verdict, "source FID (forgetting)" on the report's axis). Their numbers are the
        frames' ``{domain}_fid``, ``{domain}_kid`` columns, and the held-out summary's ``search_{domain}_fid``,
        ``heldout_{domain}_fid``, ``heldout_{domain}_fid_std``, ``delta_{domain}_fid``. None by default."""
        return {}

    # --- trials --------------------------------------------------------------------------------------
    @abstractmethod
    def trial(self, spec: Spec, coefficients: Coefficients, artifact: Path | None = None,
              progress: bool = False) -> Iterator[Rung]:
        """Run one search trial, one rung at a time; closing the iterator early (a pruned trial) undoes
        whatever it applied. Runs in the driver's process or on a Ray worker, the same way."""

    def batch_trials(self, spec: Spec) -> int | Literal["auto"]:
        """How many of this method's trials share one network batch (``trial_batch``); "auto" decides on the
        device. 1: trials run one at a time."""
        return 1

    def trial_batch(self, spec: Spec, coefficients: Sequence[Coefficients], progress: bool = False,
                    artifacts: Sequence[Path | None] | None = None,
                    ) -> Generator[dict[int, Rung | TrialError], set[int] | None, None]:
        """Run the trials of ``coefficients`` together: at each rung, every trial still running with its ``Rung``
        or its own failure; send back the trials to stop. The one shape every driver runs (a lone trial is K = 1,
        ``search.batch_trials``); each trial's numbers are those it would have alone. K > 1 only where
        ``batch_trials(spec)`` is not 1; this default runs one trial (``trial``) in that shape. ``artifacts``:
        where each trial writes its file, if the method makes one."""
        if len(coefficients) != 1:
            raise NotImplementedError(f"{self.title} trials do not share batches")
        return as_batch(self.trial(spec, coefficients[0], artifacts[0] if artifacts else None, progress))

    def artifact(self, spec: Spec, number: int) -> Path | None:
        """Where trial ``number`` writes its file, if the method makes one (absolute)."""
        return None

    @abstractmethod
    def heldout(self, spec: Spec, coefficients: Coefficients, seed_set: int) -> HeldOut:
        """One candidate on held-out seed set ``seed_set`` (at ``confirm.n``)."""

    def sampling_classes(self, spec: Spec) -> tuple[int, ...]:
        """The labels the study's trials sample with (seed s: classes[s % len]); () = the model's own default
        conditions. ``skipsearch sample`` asks, so that its images are the trials' images."""
        return ()

    # --- applying and recording -------------------------------------------------------------
    @abstractmethod
    def apply(self, model: nn.Module, coefficients: Coefficients, provenance: Provenance | None) -> Removable:
        """Put the coefficients on a user's model, all or nothing; the handle takes them off again."""

    def disagreements(self, coefficients: Coefficients, provenance: Provenance,
                      skips: Sequence[Any] | None = None) -> list[str]:
        """Where a coefficient file disagrees with itself, one line each naming the field: its coefficients
        against what its provenance records of them (``skips``: the model's skip points, where the caller has
        the model's facts; None: only what the file holds is compared). ``verify`` exits 1 on any, ``apply``
        refuses the file; hand-edited files otherwise verify or apply something other than they say."""
        return []

    def profiles(self, spec: Spec, coefficients: Coefficients, info: ModelInfo) -> tuple[Profile, ...]:
        """Plots of what the coefficients do (none by default)."""
        return ()

    def header(self, spec: Spec) -> str:
        """Lines added below the run's header, saying what the study compares."""
        return ""

    def display_name(self, spec: Spec) -> str:
        """What a study of ``spec`` is called wherever the method is named (the run's header, ``best``, the
        report, the study's ``method`` attribute): ``title``, unless the spec combines methods."""
        return self.title

    def provenance(self, spec: Spec, row: Any, heldout: Mapping[str, Any], info: ModelInfo) -> dict[str, Any]:
        """Fields a coefficient file needs beyond the common provenance (e.g. the weights file). ``row``: the
        trial's row of the store's trials frame, with this method's reference and extra columns (NaN or None where
        a value is missing); ``heldout``: the trial's row of the held-out summary (empty if not confirmed).
        ``info``: the model's facts as the study stored them (``storage.facts``): never looked up from the model,
        which a reader may not have (one handed over in memory by another process)."""
        return {}

    def heldout_provenance(self, spec: Spec, row: Any) -> dict[str, Any]:
        """Fields one held-out evaluation adds to its record in a coefficient file (``confirmation.seed_sets``),
        from its row of the store's confirmations frame (this method's columns included). None by default."""
        return {}

    def provenance_lines(self, provenance: Provenance) -> tuple[list[str], list[str]]:
        """What ``skipsearch best`` prints of the fields this method adds to provenance: lines of evidence (shown
        above the verdict) and lines naming the files it made (below it). None by default."""
        return [], []
