"""The exception every checkpoint problem is reported with."""


class CheckpointError(ValueError):
    """A checkpoint cannot be found, read, downloaded or restored.

    The message names the file or variable, what is wrong and what to do.
    """
