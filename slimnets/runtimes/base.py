"""What every runtime shares: the interface (`Runtime`), the names, the
optional packages, the input check and the thread count."""

import ctypes
import gc
import importlib
import os

import numpy as np

from slimnets.errors import InputError
from slimnets.errors import MissingExtraError

__all__ = ['RUNTIMES', 'CHOICES', 'OUTPUT_NAME', 'PACKAGES', 'Runtime', 'require',
           'is_installed', 'installed', 'check_images', 'thread_count',
           'release_memory']

RUNTIMES = ('tensorflow', 'tflite', 'onnxruntime', 'openvino')


CHOICES = RUNTIMES + ('auto',)


# runtime -> (module it needs, extra that installs it)
PACKAGES = {'onnxruntime': (('tf2onnx', 'onnxruntime'), 'onnx'),
            'openvino': (('openvino',), 'openvino')}


OUTPUT_NAME = 'probabilities'


def require(module, extra):
    """Imports an optional package; MissingExtraError names the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingExtraError(
            '%s is not installed (%s): pip install "slimnets[%s]"' % (
                module, error, extra)) from None


def is_installed(runtime):
    """Whether `runtime`'s packages can be imported (tensorflow and tflite
    always can: tf.lite ships with TensorFlow)."""
    modules, _ = PACKAGES.get(runtime, ((), None))
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            return False
    return True


def installed():
    """The runtimes usable here, in `RUNTIMES` order."""
    return tuple(r for r in RUNTIMES if is_installed(r))


def check_images(images):
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise InputError('images must be [N, height, width, 3], got shape %s'
                         % (images.shape,))
    return np.ascontiguousarray(images)


def thread_count(num_threads=None):
    """The threads a runtime runs on: `num_threads`, else every core.  The
    one default of every runtime (TFLite's num_threads, ONNX Runtime's
    intra-op threads, OpenVINO's INFERENCE_NUM_THREADS; TensorFlow's
    process-wide pools have as many by default).

    Raises:
      InputError: not a whole number of at least 1.
    """
    if num_threads is None:
        return os.cpu_count() or 1
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) \
            or num_threads < 1:
        raise InputError('num_threads must be a whole number of at least 1, '
                         'got %r' % (num_threads,))
    return num_threads


def release_memory():
    """Collects garbage and hands freed heap pages back to the system
    (glibc's malloc_trim; a no-op elsewhere), so that a converter's or a
    closed runtime's memory does not stay in the process's resident set."""
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):
        pass


class Runtime(object):
    """One loaded model.  `run(images [N, H, W, 3] float32 in [-1, 1]) ->
    probabilities [N, num_classes] float32`."""

    name = None

    def run(self, images):
        raise NotImplementedError

    def close(self):
        pass

    def describe(self, batch_size=None):
        """What runs the model (at `batch_size` images), for the CLI and
        logs."""
        return self.name

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
