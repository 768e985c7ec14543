"""How a command's failure reaches the user: one line and an honest exit code, or a bug's traceback.

A user mistake (``UserError``) and a machine failure (a full disk, an unwritable folder, a database Optuna cannot
write to) are one ``error: ...`` line and exit code 2; Ctrl-C and SIGTERM say that every completed trial is kept
(130, 143); anything else is a bug and stays a traceback (``cli.main`` scrubs passwords from it). Every line is
scrubbed of passwords.
"""

from __future__ import annotations

import functools

import typer

from skipsearch.errors import Terminated, UserError
from skipsearch.files import machine_failure
from skipsearch.interrupts import exit_code
from skipsearch.storage import urls


def friendly(fn):
    """Turn user mistakes and machine failures (a full disk, an unwritable folder, a database Optuna cannot write
    to) into 'error: ...' and exit code 2; Ctrl-C (130) and SIGTERM (143) keep what was recorded."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            typer.echo(f"error: {urls.scrub(str(err))}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM (``interrupts``): the trial in flight was recorded
            what = "terminated (SIGTERM)" if isinstance(err, Terminated) else "interrupted"
            typer.echo(f"{what}: every completed trial is saved; run the same command again to continue.", err=True)
            raise typer.Exit(exit_code(err)) from None
        except OSError as err:  # a full disk or an unwritable folder that no check above caught: the machine's
            machine = machine_failure(err)  # doing, one message; any other OSError stays a bug's traceback
            if machine is None:
                raise
            typer.echo(f"error: {urls.scrub(machine)}", err=True)
            raise typer.Exit(2) from None
        except Exception as err:
            cause = database_failure(err)
            if cause is None:
                raise
            typer.echo(f"error: Optuna could not write to the database: {urls.scrub(cause)}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def database_failure(err: BaseException) -> str | None:
    """The database's own complaint when Optuna's storage failed on it (a full disk, a lost server): Optuna
    raises ``StorageInternalError`` from SQLAlchemy's ``OperationalError``, which is the machine's doing, not a bug.
    Told by class names, so that the CLI's start stays free of Optuna's and SQLAlchemy's imports."""
    cause = err.__cause__
    if type(err).__name__ != "StorageInternalError" or type(cause).__name__ != "OperationalError":
        return None
    lines = str(getattr(cause, "orig", None) or cause).strip().splitlines()
    return lines[0] if lines else type(cause).__name__
