"""One exception type for bad input: the CLI prints its message (no traceback) and exits 1."""


class AsrKdError(Exception):
    """A user-facing error. The message names the file, line, utterance or step at fault."""
