"""Errors the core raises for problems a user can fix (kept free of torch so clients can
catch them without importing it)."""


class DataError(Exception):
    """A corpus problem the user can fix; the message is one line that says how."""
