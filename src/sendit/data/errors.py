"""The data layer's error, in a module of its own so that every data module can raise it without
importing another (sources, split, target, inputs, download and prepare all do)."""


class DataError(ValueError):
    """Data that cannot be used; the message names the file and the line or config field."""
