"""One error type for user mistakes: the CLI prints its message and exits 2, never a traceback."""


class UserError(Exception):
    """A mistake in the user's input (spec, path, name, storage URL) with a message that says how to fix it."""


class StorageError(UserError):
    """The database could not be opened or written; the message never contains a password."""
