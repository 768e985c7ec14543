"""A trial's rungs in the two shapes callers hold them: one trial's iterator of rungs, or K >= 1 trials' generator
(at each rung, every trial still running with its result or its own failure; send back the trials to stop).

Why both: the driver runs every in-process trial through the generator (``search.batch_trials``), a lone trial
being K = 1, while a method without batching (Diff-Tuning's training-step rungs) only knows how to run one trial,
and a Ray worker or a benchmark wants one trial's rungs. These two adapters convert between the shapes, so each
ladder is written once.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import TypeVar

R = TypeVar("R")

# K trials' ladder: at each rung {trial index: its result, or the exception that failed it alone}; send back the
# trials to stop (pruned), or None.
BatchLadder = Generator[dict[int, R | BaseException], set[int] | None, None]


def as_batch(rungs: Iterator[R]) -> BatchLadder[R]:
    """One trial's rungs as a K = 1 batch ladder: trial 0 at each rung; sent {0} stops it (closing its rungs,
    which undoes what its method applied). Its failure is raised, as a failure of the shared work is."""
    try:
        for rung in rungs:
            if (yield {0: rung}):
                return
    finally:
        close = getattr(rungs, "close", None)
        if close is not None:
            close()


def alone(ladder: BatchLadder[R]) -> Iterator[R]:
    """The one trial of a K = 1 batch ladder as plain rungs; its own failure is raised here. Closing the iterator
    closes the ladder."""
    try:
        for results in ladder:
            result = results[0]
            if isinstance(result, BaseException):
                raise result
            yield result
    finally:
        ladder.close()
