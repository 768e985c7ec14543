"""The three kinds of failure skipsearch tells apart, because each is handled differently.

- ``UserError``: a mistake in the user's input (spec, file, name, storage URL). The CLI prints its
  message and exits 2, never a traceback.
- ``TrialError``: a trial's own failure (non-finite samples, a diverged fine-tuning run, a timeout). The
  trial is recorded as FAIL with this reason and the study goes on.
- anything else raised inside a trial (TypeError, KeyError, a database integrity error, ...) is a bug in
  skipsearch: the run stops with a traceback and exit code 1, so it is fixed rather than spent from the
  trial budget.
"""


class UserError(Exception):
    """A mistake in the user's input (spec, path, name, storage URL) with a message that says how to fix it."""


class FieldError(UserError):
    """A mistake in one field of a section (``field`` relative to it, e.g. ``name`` of ``model``), so the
    message can name the whole dotted path."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class StorageError(UserError):
    """The database could not be opened or written; the message never contains a password."""


class TrialError(Exception):
    """A trial failed on its own terms; recorded as FAIL with this message as the reason."""


class SampleError(TrialError):
    """The sampled images are unusable (NaN or inf, or all one value)."""


class DivergedError(TrialError):
    """Fine-tuning produced a non-finite loss."""


class TrialTimeout(TrialError):
    """The trial ran past ``search.trial_timeout_s``."""


class FileWriteError(UserError, OSError):
    """The machine refused a file skipsearch writes (a full disk, a read-only or unwritable folder, a path under a
    regular file): not the trial's fault and not a bug, so the run stops with one message (exit 2) and the trial
    in flight is recorded as not evaluated. It is an ``OSError`` too, so code that already handles a failed write
    as one keeps doing so."""


class Terminated(KeyboardInterrupt):
    """The process was asked to stop by SIGTERM (``kill``, Slurm's time limit, a container stopping). A
    ``KeyboardInterrupt``, so it takes the path of Ctrl-C everywhere: the trial in flight is recorded as not
    evaluated and every completed trial stays saved (``skipsearch.interrupts``)."""
