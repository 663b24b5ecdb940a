"""The data layer's error, in a module of its own so that every data module can raise it without
importing another (sources, split, target, inputs, download and prepare all do)."""
from sendit.errors import InputError


class DataError(InputError):
    """Data that cannot be used; the message names the file and the line or config field."""
