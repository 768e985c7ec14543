"""The spec as a study's database keeps it, and the check that a resumed study's numbers still mean the same.

Below the driver and the annotations, which both write the stored form.
"""

from __future__ import annotations

from skipsearch.errors import UserError
from skipsearch.spec import Spec
from skipsearch.specfile import changed_science
from skipsearch.storage import urls


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
