"""The 'auto' runtime: the fastest installed runtime for the model and batch
size, measured once (every candidate also has to agree with TensorFlow)
and remembered in `runtimes.json` in the checkpoint cache, keyed by model,
batch size and machine."""

import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import tempfile
import time

import numpy as np
import tensorflow as tf2

from slimnets import checkpoints
from slimnets.errors import InputError
from slimnets.graph_format import INPUT_NAME
from slimnets.runtimes.base import RUNTIMES
from slimnets.runtimes.base import Runtime
from slimnets.runtimes.base import check_images
from slimnets.runtimes.base import installed
from slimnets.runtimes.base import is_installed
from slimnets.runtimes.base import release_memory
from slimnets.runtimes.onnx import OnnxRuntime
from slimnets.runtimes.openvino import OpenVINORuntime
from slimnets.runtimes.tensorflow import TensorFlowRuntime
from slimnets.runtimes.tflite import TFLiteRuntime

__all__ = ['AutoRuntime', 'CLASSES', 'AUTO_FILE', 'MEASURE_ORDER',
           'AGREEMENT', 'structure_key', 'machine_key', 'batch_bucket',
           'time_runtimes']

_log = logging.getLogger(__name__)

# runtime name -> its class
CLASSES = {'tensorflow': TensorFlowRuntime, 'tflite': TFLiteRuntime,
           'onnxruntime': OnnxRuntime, 'openvino': OpenVINORuntime}

AUTO_FILE = 'runtimes.json'


# The order in which `auto` tries the other runtimes against TensorFlow
# (one at a time against the fastest so far): ONNX first, while only
# TensorFlow is loaded (tf2onnx's conversion peaks highest, about 600 MB
# above its result for v2 1.0_224).
MEASURE_ORDER = ('onnxruntime', 'tflite', 'openvino')


# Probabilities of a candidate runtime may differ from TensorFlow's by this
# much before `auto` refuses it (the contract every runtime meets).
AGREEMENT = 1e-4


def structure_key(graph_def):
    """A digest of a graph's ops, wiring and constant shapes (not values):
    the same architecture at the same input size gets the same key."""
    digest = hashlib.sha1()
    for node in graph_def.node:
        digest.update(('%s|%s|%s' % (node.name, node.op,
                                     ','.join(node.input))).encode())
        if node.op == 'Const':
            shape = node.attr['value'].tensor.tensor_shape
            digest.update(str([d.size for d in shape.dim]).encode())
        elif node.op == 'Placeholder':
            digest.update(str(node.attr['shape']).encode())
    return digest.hexdigest()[:16]


def machine_key():
    """CPU model, core count, and the versions of the runtimes installed."""
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as handle:
            for line in handle:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    versions = ['tensorflow=' + tf2.__version__]
    for distribution in ('ai-edge-litert', 'onnxruntime', 'openvino'):
        try:  # read from the installed metadata: importing is slow
            versions.append('%s=%s' % (distribution,
                                       importlib.metadata.version(
                                           distribution)))
        except importlib.metadata.PackageNotFoundError:
            pass
    return '%s x%d %s' % (cpu, os.cpu_count() or 1, ' '.join(versions))


def batch_bucket(batch_size):
    """Batch sizes measured for `auto`: 1, 2, 4, 8, 16 (and 16 above)."""
    bucket = 1
    while bucket < min(batch_size, 16):
        bucket *= 2
    return bucket


def _read_choices(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def _write_choice(path, key, record):
    """Adds one record to the choices file (atomic replace)."""
    choices = _read_choices(path)
    choices[key] = record
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    handle, scratch = tempfile.mkstemp(dir=folder, suffix='.tmp')
    with os.fdopen(handle, 'w') as out:
        json.dump(choices, out, indent=1, sort_keys=True)
    os.replace(scratch, path)


def time_runtimes(runners, images, rounds=9, warmup=2):
    """Median seconds of each `runners[name](images)`, timed in turn
    (A B C A B C ...) so that a change in the machine's load falls on all
    of them alike."""
    for run in runners.values():
        for _ in range(warmup):
            run(images)
    repeats = max(1, 4 // len(images))   # a few calls per sample at batch 1
    times = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            start = time.perf_counter()
            for _ in range(repeats):
                run(images)
            times[name].append((time.perf_counter() - start) / repeats)
    return {name: float(np.median(t)) for name, t in times.items()}


class AutoRuntime(Runtime):
    """The fastest installed runtime for each batch size (see module doc)."""

    name = 'auto'

    def __init__(self, graph_def, cache_dir=None, model_key=None,
                 num_threads=None):
        self.graph_def = graph_def
        self.num_threads = num_threads   # passed to every runtime it loads
        self.path = os.path.join(checkpoints.cache_dir(cache_dir), AUTO_FILE)
        self.model_key = model_key or structure_key(graph_def)
        self.choices = {}    # bucket -> runtime name
        self.loaded = {}     # runtime name -> Runtime

    def _key(self, bucket):
        threads = '|t%d' % self.num_threads if self.num_threads else ''
        return '%s|b%d%s|%s' % (self.model_key, bucket, threads, machine_key())

    def _runtime(self, name):
        if name not in self.loaded:
            self.loaded[name] = CLASSES[name](self.graph_def,
                                              num_threads=self.num_threads)
        return self.loaded[name]

    def _measure(self, bucket):
        """Times the installed runtimes at `bucket` images; the fastest of
        those that agree with TensorFlow to `AGREEMENT`.

        At most two are loaded at once (a runtime of v2 1.0_224 holds 100
        to 300 MB, ONNX conversion briefly 500 MB more): each candidate in
        `MEASURE_ORDER` is timed against the fastest so far, interleaved
        (`time_runtimes`), and the slower of the two is closed at once.
        The times returned are in the first pair's terms (each pair's
        scaled by the ratio of the fastest's times), so the one chosen has
        the smallest.
        """
        shape = [d.size for d in self._input_shape()]
        rng = np.random.RandomState(0)
        images = rng.uniform(-1, 1, [bucket] + shape[1:]).astype(np.float32)
        reference = self._runtime('tensorflow').run(images)
        best, timings = 'tensorflow', {}
        for name in [n for n in MEASURE_ORDER if n in installed()]:
            try:
                runtime = self._runtime(name)
                difference = float(np.max(np.abs(runtime.run(images) -
                                                 reference)))
            except Exception as error:  # pylint: disable=broad-except
                # A converter that cannot take this graph leaves the choice
                # to the others; TensorFlow always can.
                _log.warning('auto: %s cannot run this model: %s', name, error)
                self._release(name)
                continue
            if difference > AGREEMENT:
                _log.warning('auto: %s is %.3g off TensorFlow; not used',
                             name, difference)
                self._release(name)
                continue
            release_memory()   # what the converter let go of
            pair = time_runtimes({best: self._runtime(best).run,
                                  name: runtime.run}, images)
            scale = timings[best] / pair[best] if best in timings else 1.0
            timings[name] = pair[name] * scale
            timings.setdefault(best, pair[best])
            slower, best = (name, best) if timings[name] >= timings[best] \
                else (best, name)
            self._release(slower)
            del runtime
        if not timings:   # TensorFlow alone
            timings = time_runtimes({best: self._runtime(best).run}, images)
        _log.debug('auto at batch %d: %s (%s)', bucket, best, ', '.join(
            '%s %.2f ms' % (n, 1e3 * t) for n, t in sorted(timings.items())))
        return best, timings

    def _release(self, *names):
        """Closes and drops the loaded runtimes `names` (all that are not
        chosen for any batch size when none are given), then hands the
        freed memory back: a kept runtime costs 100-300 MB (v2 1.0_224)."""
        chosen = set(self.choices.values())
        for name in names or list(self.loaded):
            if name not in chosen and name in self.loaded:
                self.loaded.pop(name).close()
        release_memory()

    def _input_shape(self):
        for node in self.graph_def.node:
            if node.name == INPUT_NAME:
                return node.attr['shape'].shape.dim
        raise InputError('the graph has no %r input' % INPUT_NAME)

    def choice(self, batch_size):
        """The runtime used for `batch_size` images (measured on first use
        of its bucket unless remembered)."""
        bucket = batch_bucket(batch_size)
        if bucket not in self.choices:
            key = self._key(bucket)
            record = _read_choices(self.path).get(key)
            name = record and record.get('runtime')
            if name not in RUNTIMES or not is_installed(name):
                name, timings = self._measure(bucket)
                _write_choice(self.path, key, {
                    'runtime': name, 'batch_size': bucket,
                    'milliseconds': {n: round(1e3 * t, 3)
                                     for n, t in timings.items()}})
                self.choices[bucket] = name
                self._release()   # keep only what was chosen
            self.choices[bucket] = name
        return self.choices[bucket]

    def runtime_for(self, batch_size):
        """The loaded `Runtime` that `run` uses for `batch_size` images."""
        return self._runtime(self.choice(batch_size))

    def run(self, images):
        images = check_images(images)
        return self.runtime_for(len(images)).run(images)

    def describe(self, batch_size=None):
        """With `batch_size`, the runtime chosen for it (measured now if
        needed), else every choice made so far."""
        if batch_size is not None:
            name = self.choice(batch_size)
            return 'auto: %s' % self._runtime(name).describe(batch_size)
        if not self.choices:
            return 'auto'
        return 'auto: ' + ', '.join(
            '%s at batch %s' % (self.loaded[name].describe()
                                if name in self.loaded else name,
                                bucket if bucket < 16 else '16+')
            for bucket, name in sorted(self.choices.items()))

    def close(self):
        for runtime in self.loaded.values():
            runtime.close()
        self.loaded = {}
