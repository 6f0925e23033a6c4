"""TensorFlow's process settings made by the command line: its C++ log
lines kept off the user's screen, and a thread pool per session.

TensorFlow 2.21 writes its start-up lines (oneDNN, CUDA probing, CPU
features) from C++ straight to file descriptor 2, before `absl` reads
`TF_CPP_MIN_LOG_LEVEL`, so the variable alone does not silence them.
`filtered_stderr(level)` routes descriptor 2 through a small filter that
drops C++ log lines below `level` (0 info, 1 warning, 2 error, 3 fatal) and
passes everything else through unchanged; Python's own `sys.stderr`
(tracebacks, warnings, progress bars) bypasses the filter entirely.

`prefer_session_thread_pools()` sets `THREAD_POOLS_VARIABLE` before
TensorFlow starts, so that each session can have an intra-op pool of its
own: the 'tensorflow' runtime then runs batch 1 on one thread, in the
caller's thread (see `slimnets.runtimes.TensorFlowRuntime`).

`quiet_python(verbose)` keeps the Python side quiet too: records of the
`tensorflow` and `absl` loggers below ERROR (the v1 deprecation notices)
and Python warnings (deprecations of TensorFlow, Keras and the converters)
are dropped unless `verbose`.

Only the command line uses this; library code never touches descriptors
or the process environment.
"""

import contextlib
import logging
import os
import re
import sys
import threading
import warnings

__all__ = [
    'LEVEL_VARIABLE', 'THREAD_POOLS_VARIABLE', 'DEFAULT_LEVEL',
    'PYTHON_LOGGERS', 'prefer_session_thread_pools',
    'session_thread_pools', 'severity', 'quiet_python',
    'level_from_environment', 'filtered_stderr',
]

LEVEL_VARIABLE = 'TF_CPP_MIN_LOG_LEVEL'
# Read once by TensorFlow, when it makes its first device: '1' gives each
# session an intra-op thread pool of its own.
THREAD_POOLS_VARIABLE = 'TF_OVERRIDE_GLOBAL_THREADPOOL'
DEFAULT_LEVEL = 3  # only fatal lines
_SEVERITIES = 'IWEF'
_CPP_LINE = re.compile(r'^([IWEF])\d{4} \S+\s+\d+ \S+:\d+\] ')
# TFLite / LiteRT's own C++ logger ('INFO: Created TensorFlow Lite XNNPACK
# delegate for CPU.').
_LITE_LINE = re.compile(r'^(INFO|WARNING|ERROR): ')
_LITE_SEVERITIES = ('INFO', 'WARNING', 'ERROR')
_PREAMBLE = 'WARNING: All log messages before absl::InitializeLog()'
# The TFLite converter's and calibrator's own lines, printed without a
# severity ('fully_quantize: 0, inference_type: 6, input_inference_type: ...',
# 'Estimated count of arithmetic ops: ...').
_CONVERTER_LINE = re.compile(
    r'^(fully_quantize: \d|Estimated count of arithmetic ops|'
    r'Summary on the non-converted ops:|\* Accepted dialects:|'
    r'\s+\* Non-Converted Ops:|\s+- arith\.constant|\s+- tfl\.)')
# Python loggers of TensorFlow and its dependencies.
PYTHON_LOGGERS = ('tensorflow', 'absl', 'h5py', 'tf2onnx', 'openvino')
_CONTINUATION = 'To enable the following instructions'


def prefer_session_thread_pools():
    """Asks TensorFlow for a thread pool per session (THREAD_POOLS_VARIABLE
    set to 1) unless the user set the variable or TensorFlow is already
    imported in this process (then it is too late, or the program is not
    the command line's own).  Returns whether sessions will have their own
    pools."""
    if 'tensorflow' not in sys.modules:
        os.environ.setdefault(THREAD_POOLS_VARIABLE, '1')
    return session_thread_pools()


def session_thread_pools():
    """Whether THREAD_POOLS_VARIABLE asks TensorFlow for an intra-op pool per
    session (it takes effect only if set before TensorFlow made its first
    device)."""
    return os.environ.get(THREAD_POOLS_VARIABLE, '').strip().lower() in (
        '1', 'true')


def severity(line):
    """0-3 for a TensorFlow C++ log line (or its continuation), else None."""
    match = _CPP_LINE.match(line)
    if match:
        return _SEVERITIES.index(match.group(1))
    if line.startswith(_PREAMBLE):
        return 1
    match = _LITE_LINE.match(line)
    if match:
        return _LITE_SEVERITIES.index(match.group(1))
    if _CONVERTER_LINE.match(line):
        return 0
    return None


class _BelowError(logging.Filter):
    """Drops log records below ERROR."""

    def filter(self, record):
        return record.levelno >= logging.ERROR


_BELOW_ERROR = _BelowError()


@contextlib.contextmanager
def quiet_python(verbose=False):
    """Within the block, TensorFlow's (and its dependencies') Python log
    records below ERROR and every Python warning are dropped; with
    `verbose`, nothing is."""
    if verbose:
        yield
        return
    loggers = [logging.getLogger(name) for name in PYTHON_LOGGERS]
    for logger in loggers:
        logger.addFilter(_BELOW_ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            yield
    finally:
        for logger in loggers:
            logger.removeFilter(_BELOW_ERROR)


def level_from_environment(verbose=False):
    """The level to filter at: None (filter nothing) with `verbose`, the
    user's own TF_CPP_MIN_LOG_LEVEL when set, else DEFAULT_LEVEL."""
    if verbose:
        return None
    value = os.environ.get(LEVEL_VARIABLE, '').strip()
    return int(value) if value.isdigit() else DEFAULT_LEVEL


def _pump(source, sink, level):
    """Copies lines from descriptor `source` to `sink`, dropping C++ log
    lines (and their continuation lines) below `level`."""
    pending = b''
    dropping = False
    while True:
        chunk = os.read(source, 65536)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b'\n')
        for raw in lines:
            line = raw.decode('utf-8', 'replace')
            found = severity(line)
            if found is None and dropping and line.startswith(_CONTINUATION):
                continue
            dropping = found is not None and found < level
            if not dropping:
                os.write(sink, raw + b'\n')
    if pending:
        os.write(sink, pending)


_DIRECT = []


def _direct_stream(descriptor, encoding):
    """A Python stream onto what `descriptor` is (the real stderr), kept
    open for the life of the process: log handlers made inside the block
    (TensorFlow's own) hold on to it, and must not find it closed when
    they write after the block or in the next block.  Reused while it
    writes to the same file."""
    target = os.fstat(descriptor)
    for stream in _DIRECT:
        known = os.fstat(stream.fileno())
        if (known.st_dev, known.st_ino) == (target.st_dev, target.st_ino):
            return stream
    stream = open(os.dup(descriptor), 'w', buffering=1,  # noqa: SIM115
                  encoding=encoding, errors='backslashreplace')
    _DIRECT.append(stream)
    return stream


@contextlib.contextmanager
def filtered_stderr(level):
    """Within the block, C++ log lines below `level` are dropped.

    Does nothing when `level` is None or when `sys.stderr` is not file
    descriptor 2 (for example under a test harness that captures it).
    """
    try:
        attached = level is not None and sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        attached = False
    if not attached:
        yield
        return
    os.environ.setdefault(LEVEL_VARIABLE, str(level))
    sys.stderr.flush()
    original = os.dup(2)
    python_stderr = sys.stderr
    sys.stderr = _direct_stream(original, python_stderr.encoding)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    pump = threading.Thread(target=_pump, args=(read_end, original, level),
                            name='slimnets-tflog', daemon=True)
    pump.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        sys.stderr = python_stderr
        os.dup2(original, 2)   # closes the pipe's last write end
        pump.join(timeout=5)
        os.close(read_end)
        os.close(original)
