"""The base of every error that bad user input raises (a config, data file, model name, run or export).

The CLI turns these, and only these, into one line naming the file or field and exit code 2; anything
else is a bug and keeps its traceback. Each layer defines its own subclass, so catching them needs
no import of the (heavy) layers that raise them.
"""


class InputError(ValueError):
    """Input that cannot be used; the message names the file, field or argument."""
