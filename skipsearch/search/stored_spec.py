"""The spec as a study's database keeps it, and the check that a resumed study's numbers still mean the same.

Below the driver and the annotations, which both write the stored form.
"""

from __future__ import annotations

from skipsearch.errors import UserError
from skipsearch.spec import Spec
from skipsearch.specfile import changed_science, parse_stored
from skipsearch.storage import urls


def read_stored(store, study: str) -> Spec | None:
    """The spec a study holds (``store``: a ``Store``), read through today's spec models; None when the database
    has no study of that name. Readers that can go on without a spec (a summary) take the None; ``export`` and
    the API's readers turn it into the user's error."""
    raw = store.study_spec(study)
    return None if raw is None else parse_stored(raw, f"the stored spec of study {study!r}")


def check_same_science(name: str, first: dict, now: Spec) -> None:
    """A study's numbers are only comparable if the fields that decide them never change (``spec.science``)."""
    changed = changed_science(first, now)
    if changed:
        raise UserError(f"study {name!r} exists with a different {', '.join(changed)}; its trials would not be "
                        f"comparable. Use a new study name, or restore the original values.")


def stored_form(spec: Spec) -> dict:
    """The spec as the database keeps it: its storage URL without the password."""
    raw = spec.model_dump(mode="json")
    try:
        raw["storage"] = urls.without_password(urls.parse(spec.storage))
    except UserError:  # not usable as it stands (another machine's path?): kept, any password masked
        raw["storage"] = urls.shown(spec.storage)
    return raw


def with_operational(first: dict, now: Spec) -> dict:
    """``first`` (a stored spec) with the operational fields (``spec.science``'s complement: budgets, the
    confirmation's plan) taken from ``now``'s stored form (so its storage URL without the password), the rest as
    stored: readers then judge a study by the plan of its latest run, and its science keeps the text it was
    created with (a relative path of an older study included)."""
    from pydantic import BaseModel

    def merged(stored: dict, section: BaseModel, given: dict) -> dict:
        out = dict(stored)
        for name in type(section).model_fields:
            value = getattr(section, name)
            if name in getattr(section, "operational", frozenset()):
                out[name] = given[name]
            elif isinstance(value, BaseModel) and isinstance(stored.get(name), dict):
                out[name] = merged(stored[name], value, given[name])
        return out

    return merged(first, now, stored_form(now))
