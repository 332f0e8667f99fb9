"""The error every data reader raises for bad input.

It lives apart from the readers so that each of them, and everything downstream, can import it
without importing another reader.
"""

from __future__ import annotations


class DataError(ValueError):
    """Bad or missing input; the message names the file, the value found and the one expected."""
