"""A study's model facts are stored with the study, so that reading its results never needs the model.

``best``, ``export`` and ``report`` need to know the model's skip points (module path, level, index), its
channels, resolution and conditions: the provenance lists every skip with its rho, the report draws rho over
the skips. Looked up from the model at read time, these fail for a model handed over in memory
(``skipsearch.run(spec, model=pipe)``: the object is gone in a new process) and cost the model's library
(diffusers, torch) in a reader that only reads. So the driver records them (``ModelInfo`` as JSON, in
``skipsearch_study_facts``) when the study is first opened, compares them at every later open, and readers use
the stored ones. A study stored before skipsearch kept its facts gets them looked up, as before, and stored the
next time a driver opens it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from skipsearch.errors import UserError
from skipsearch.modelfacts import ModelInfo, from_json, to_json

if TYPE_CHECKING:  # typing only: the families import torch
    from skipsearch.models import ModelSection
    from skipsearch.storage.store import Store


def record_facts(store: Store, study: str, info: ModelInfo) -> ModelInfo:
    """At a driver's open: store the model's facts if the study has none, and return the study's. Facts that
    differ from those it was stored with mean its trials would not compare (its skip points, resolution or
    conditions are not the same): a UserError naming each, before any trial. Only the facts the study stored are
    compared, so a fact that a later skipsearch adds does not lock an older study out."""
    stored = json.loads(store.save_study_facts(study, to_json(info)))
    now = json.loads(to_json(info))
    changed = [f"  {key}: stored {stored[key]!r}, now {now[key]!r}" for key in sorted(stored)
               if key in now and stored[key] != now[key]]
    if changed:
        raise UserError(f"study {study!r} was stored with other facts of model {info.model_id!r} than it has now; its "
                        f"trials would not be comparable:\n" + "\n".join(changed)
                        + "\nRestore the model, or use a new study name for the changed one.")
    return from_json(json.dumps(stored))


def study_facts(store: Store, study: str, spec_model: ModelSection) -> ModelInfo:
    """For readers: the facts the study was stored with; for a study stored before skipsearch kept them, the
    model's facts looked up now (``spec_model``: the stored spec's model section)."""
    text = store.study_facts(study)
    if text is not None:
        return from_json(text)
    from skipsearch.models import model_info  # the families: only for studies that predate stored facts

    try:
        return model_info(spec_model)
    except UserError as err:
        raise UserError(f"study {study!r} was stored before skipsearch kept its model's facts, and they cannot be "
                        f"looked up here: {err}\nOpen it once more with `skipsearch run` (or skipsearch.run(spec, "
                        f"model=...) for a model handed over in memory) to store them.") from None
