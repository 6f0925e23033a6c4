"""What the command line shows besides a command's own lines: slimnets'
log records on stderr, and the formatting the commands share."""

import logging
import sys

__all__ = ['format_kwargs', 'show_library_log']


class _StderrHandler(logging.Handler):
    """slimnets' log records, as plain lines on the current sys.stderr."""

    def emit(self, record):
        try:
            sys.stderr.write(self.format(record) + '\n')
        except Exception:  # noqa: BLE001  (logging must never fail a command)
            self.handleError(record)


def show_library_log(verbose):
    """What slimnets logs (where a checkpoint was stored, a source falling
    back, resumed training) reaches the user as plain lines; more with
    --verbose."""
    logger = logging.getLogger('slimnets')
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter('%(message)s'))
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)


def format_kwargs(kwargs):
    """A network's keyword arguments as '(name=value, ...)', sorted."""
    return '(%s)' % ', '.join('%s=%s' % item for item in sorted(kwargs.items()))
