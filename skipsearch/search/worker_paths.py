"""Do the Ray workers see the files a spec names as this machine does? Checked before the study is stored.

A Ray trial reads the model, the reference and the data sets on the machine it runs on, and writes fine-tuned
weights there. Paths are absolute by then (``skipsearch.paths``), but a cluster whose nodes do not share the
driver's file system would find nothing at them, and every trial would fail after the study was stored under
its name. So before that, one small task per node of the cluster looks at every path the spec names (a file's
size, that a folder is one, that an output folder can be written) and the answers are compared with this
machine's. A local Ray runs on this machine and is not asked.

What this cannot see, a changed file of the same size, is caught at the first rung instead: every trial's
scores carry the reference's and the model's content hashes, which the driver compares with the study's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from skipsearch.errors import UserError
from skipsearch.paths import SpecPath

if TYPE_CHECKING:
    from skipsearch.search.ray_tune import Placement
    from skipsearch.spec import Spec

ANSWER_S = 120.0  # how long a node may take to start a worker and look


@dataclass(frozen=True)
class Seen:
    """What one machine finds at a path."""

    what: Literal["file", "folder", "nothing", "writable", "unwritable"]
    size: int | None = None  # a file's, in bytes

    def __str__(self) -> str:
        return {"file": f"a file of {self.size} bytes", "folder": "a folder", "nothing": "nothing",
                "writable": "a folder it can write", "unwritable": "no folder it can write"}[self.what]


def look(paths: list[SpecPath]) -> dict[str, Seen]:
    """What this machine finds at each path, by field; runs on the driver and, as a Ray task, on each node."""
    return {p.field: _look(p) for p in paths}


def _look(p: SpecPath) -> Seen:
    path = Path(p.path)
    if p.output:
        existing = next((q for q in (path, *path.parents) if q.exists()), None)
        ok = existing is not None and existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)
        return Seen("writable" if ok else "unwritable")
    if path.is_file():
        return Seen("file", path.stat().st_size)
    return Seen("folder") if path.is_dir() else Seen("nothing")


def differences(paths: list[SpecPath], here: dict[str, Seen], there: dict[str, Seen], node: str) -> list[str]:
    """One line per path that a node sees otherwise than this machine does, naming the field."""
    return [f"{p.field}: {p.path} is {there[p.field]} on Ray node {node}, {here[p.field]} here"
            for p in paths if there.get(p.field) != here[p.field]]


def check_on_workers(spec: Spec, placement: Placement) -> None:
    """Refuse, before the study is stored, a spec whose files some node of the Ray cluster does not see as this
    machine does. A local Ray (no address, not started yet) runs on this machine: nothing to ask."""
    import ray

    paths = spec.paths()
    if not paths or (placement.address is None and not ray.is_initialized()):
        return
    from skipsearch.search.ray_tune import _init_ray

    try:
        started = _init_ray(placement)
    except ConnectionError as err:  # Ray's own text names the address; the cause (auth, no GCS) is a log line above
        raise UserError(f"{err}: is the cluster up, and may this machine join it (with Ray's token "
                        f"authentication on, RAY_AUTH_MODE=token and the cluster's token)?") from None
    try:
        compare_on_nodes(paths, look(paths))
    finally:
        if started:
            ray.shutdown()


def compare_on_nodes(paths: list[SpecPath], here: dict[str, Seen]) -> None:
    """Ask every node of the connected Ray cluster that can run a trial what it finds at ``paths``; a UserError
    lists each difference from ``here``."""
    import ray
    from ray.exceptions import GetTimeoutError
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = {f"{n['NodeManagerAddress']} ({n['NodeID'][:8]})": n["NodeID"] for n in ray.nodes()
             if n.get("Alive") and (n["Resources"].get("CPU") or n["Resources"].get("GPU"))}
    task = ray.remote(num_cpus=0)(look)
    asked = {name: task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)).remote(paths)
             for name, node_id in nodes.items()}
    try:
        answers = dict(zip(asked, ray.get(list(asked.values()), timeout=ANSWER_S)))
    except GetTimeoutError:
        raise UserError(f"the Ray cluster's nodes did not say within {ANSWER_S:.0f} s whether they see the files the "
                        f"spec names ({', '.join(p.field for p in paths)}); is every node up?") from None
    lines = [line for node, there in answers.items() for line in differences(paths, here, there, node)]
    if lines:
        raise UserError("the Ray workers do not see the files this spec names as this machine does:\n  "
                        + "\n  ".join(lines) + "\nRay trials read and write them on the nodes they run on: put "
                        "them on a file system that every node mounts at the same path, or run a local Ray "
                        "(--workers without --address)")
