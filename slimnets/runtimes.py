"""Inference runtimes behind one interface.

Every runtime runs the same folded inference graph (`slimnets.optimize`:
input 'input' [N, size, size, 3] in [-1, 1], output 'probabilities'
[N, num_classes]) and answers `run(images) -> probabilities`:

  tensorflow   the GraphDef, rewritten for TensorFlow's CPU kernels
               (`optimize.rewrite_for_tensorflow_cpu`: small pointwise
               convolutions as fused MatMuls, global pools as Means,
               hard-swish fused into its convolution), in a TensorFlow
               session, called through a callable whose fed and fetched
               tensors are fixed up front;
  tflite       the graph converted to TFLite, run by LiteRT
               (`ai-edge-litert`, extra `litert`) when installed, else by
               `tf.lite` (XNNPACK on CPU);
  onnxruntime  the graph converted by tf2onnx (opset `ONNX_OPSET`), run by
               ONNX Runtime on the CPU (extra `onnx`);
  openvino     the graph converted by `openvino.convert_model`, compiled
               for the CPU in float32 (extra `openvino`);
  auto         the fastest of the installed runtimes for the model and
               batch size: measured once (every candidate also has to agree
               with TensorFlow) and remembered in `runtimes.json` in the
               checkpoint cache, keyed by model, batch size and machine.

`load(graph_def, runtime)` returns a `Runtime`; `num_threads=N` runs any of
them (and every candidate of `auto`) on N threads.  A runtime whose package
is missing raises `MissingExtraError` naming the extra to install.
"""

import ctypes
import gc
import hashlib
import importlib
import importlib.metadata
import json
import logging
import os
import platform
import tempfile
import time
import warnings

import numpy as np
import tensorflow as tf2
import tensorflow.compat.v1 as tf
from tensorflow.python.util import deprecation  # pylint: disable=g-direct-tensorflow-import

from slimnets import checkpoints
from slimnets import optimize
from slimnets import tflog
from slimnets.errors import InputError
from slimnets.errors import MissingExtraError
from slimnets.graph_format import INPUT_NAME
from slimnets.graph_format import OUTPUT_NAMES

_log = logging.getLogger(__name__)

RUNTIMES = ('tensorflow', 'tflite', 'onnxruntime', 'openvino')
CHOICES = RUNTIMES + ('auto',)
# runtime -> (module it needs, extra that installs it)
_PACKAGES = {'onnxruntime': (('tf2onnx', 'onnxruntime'), 'onnx'),
             'openvino': (('openvino',), 'openvino')}
ONNX_OPSET = 17
AUTO_FILE = 'runtimes.json'
# The order in which `auto` tries the other runtimes against TensorFlow
# (one at a time against the fastest so far): ONNX first, while only
# TensorFlow is loaded (tf2onnx's conversion peaks highest, about 600 MB
# above its result for v2 1.0_224).
MEASURE_ORDER = ('onnxruntime', 'tflite', 'openvino')
# Probabilities of a candidate runtime may differ from TensorFlow's by this
# much before `auto` refuses it (the contract every runtime meets).
AGREEMENT = 1e-4
OUTPUT_NAME = 'probabilities'
# With tflog.THREAD_POOLS_VARIABLE (TF_OVERRIDE_GLOBAL_THREADPOOL=1; the
# command line sets it) set before TensorFlow makes its first device, each
# session can have an intra-op thread pool of its own; the
# 'tensorflow' runtime then runs batches up to ONE_THREAD_BATCH in a second
# session on one thread, in the caller's thread (no hand-off between
# threads).  Measured on 2 cores, at batch 1 that takes 0.51x (v3-small) to
# 0.83x (v1) the time of the shared two-thread pool, idle or busy.
ONE_THREAD_BATCH = 1


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
    modules, _ = _PACKAGES.get(runtime, ((), None))
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            return False
    return True


def installed():
    """The runtimes usable here, in `RUNTIMES` order."""
    return tuple(r for r in RUNTIMES if is_installed(r))


def _check_images(images):
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise InputError('images must be [N, height, width, 3], got shape %s'
                         % (images.shape,))
    return np.ascontiguousarray(images)


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


class TensorFlowRuntime(Runtime):
    """The GraphDef rewritten for TensorFlow's CPU kernels
    (`optimize.rewrite_for_tensorflow_cpu`: small pointwise convolutions
    as fused MatMuls, global pools as Means, hard-swish fused into its
    convolution; at batch 1 on a 2-core CPU MobileNet v3-small runs about
    1.9x as fast, v3-large 1.4x, v2 up to 1.15x (on a busy machine), v1
    alike: see benchmarks/tensorflow_path.py), in its own graph and
    session, called through `Session.make_callable` (no per-call
    feed/fetch resolution); batch 1 in a one-thread session of its own
    where sessions can have their own pools (`ONE_THREAD_BATCH`).
    `rewrite` says what was rewritten (an `optimize.CpuRewrite`)."""

    name = 'tensorflow'

    def __init__(self, graph_def, num_threads=None):
        """`num_threads`: the session's intra- and inter-op threads (None:
        TensorFlow's pools as the process set them)."""
        graph_def, self.rewrite = optimize.rewrite_for_tensorflow_cpu(
            graph_def)
        self.num_threads = num_threads
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf.import_graph_def(graph_def, name='')
        self.graph.finalize()
        output = self.graph.get_tensor_by_name(OUTPUT_NAME + ':0')
        feed = [self.graph.get_tensor_by_name(INPUT_NAME + ':0')]
        config = None
        if num_threads:
            config = tf.ConfigProto(
                intra_op_parallelism_threads=num_threads,
                inter_op_parallelism_threads=num_threads,
                use_per_session_threads=tflog.session_thread_pools())
        self.session = tf.Session(graph=self.graph, config=config)
        self._call = self.session.make_callable(output, feed)
        self.one_thread_session = None   # see ONE_THREAD_BATCH
        if tflog.session_thread_pools() and num_threads in (None, 1):
            self.one_thread_session = tf.Session(
                graph=self.graph, config=tf.ConfigProto(
                    intra_op_parallelism_threads=1,
                    inter_op_parallelism_threads=1,
                    use_per_session_threads=True))
            call = self.one_thread_session.make_callable(
                output, feed, accept_options=True)
            in_caller = tf.RunOptions(inter_op_thread_pool=-1)
            self._one_thread_call = lambda images: call(images,
                                                        options=in_caller)

    def describe(self, batch_size=None):
        if self.one_thread_session is not None and batch_size is not None \
                and batch_size <= ONE_THREAD_BATCH:
            return '%s (batch %d on one thread)' % (self.name, batch_size)
        return self.name

    def run(self, images):
        images = _check_images(images)
        if self.one_thread_session is not None and \
                len(images) <= ONE_THREAD_BATCH:
            return self._one_thread_call(images)
        return self._call(images)

    def close(self):
        self.session.close()
        if self.one_thread_session is not None:
            self.one_thread_session.close()


def tflite_model(graph_def):
    """The folded GraphDef as a float TFLite flatbuffer (bytes); batch
    dimension dynamic."""
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(graph_def, name='')
        with tf.Session(graph=graph) as session:
            converter = tf.lite.TFLiteConverter.from_session(
                session,
                [graph.get_tensor_by_name(INPUT_NAME + ':0')],
                [graph.get_tensor_by_name(OUTPUT_NAME + ':0')])
            return converter.convert()


def tflite_interpreter(model_content, num_threads=None):
    """A LiteRT interpreter when `ai-edge-litert` is installed, else
    tf.lite's (deprecated since TF 2.20 in favour of LiteRT)."""
    try:
        from ai_edge_litert import interpreter as litert  # pylint: disable=import-outside-toplevel
        return litert.Interpreter(model_content=model_content,
                                  num_threads=num_threads)
    except ImportError:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            return tf2.lite.Interpreter(model_content=model_content,
                                        num_threads=num_threads)


class TFLiteRuntime(Runtime):
    """The graph converted to TFLite (XNNPACK on CPU)."""

    name = 'tflite'

    def __init__(self, graph_def=None, model_content=None, num_threads=None):
        if model_content is None:
            model_content = tflite_model(graph_def)
        self.num_threads = num_threads or os.cpu_count()
        self.interpreter = tflite_interpreter(model_content,
                                              num_threads=self.num_threads)
        self._input = self.interpreter.get_input_details()[0]['index']
        outputs = self.interpreter.get_output_details()
        matching = [d for d in outputs
                    if d['name'].split(':')[0].endswith(OUTPUT_NAME)]
        self._output = (matching or outputs)[0]['index']
        self._shape = None
        module = type(self.interpreter).__module__
        self.engine = 'LiteRT' if module.startswith('ai_edge_litert') \
            else 'tf.lite'

    def describe(self, batch_size=None):
        return 'tflite (%s)' % self.engine

    def run(self, images):
        images = _check_images(images)
        if self._shape != images.shape:
            self.interpreter.resize_tensor_input(self._input,
                                                 list(images.shape))
            self.interpreter.allocate_tensors()
            self._shape = images.shape
        self.interpreter.set_tensor(self._input, images)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._output).copy()


def onnx_model(graph_def, opset=ONNX_OPSET):
    """The folded GraphDef as an ONNX ModelProto (tf2onnx), with input
    'input' [N, size, size, 3] and outputs 'logits' and 'probabilities'."""
    require('onnxruntime', 'onnx')
    tf2onnx = require('tf2onnx', 'onnx')
    names = {INPUT_NAME + ':0': INPUT_NAME}
    names.update({n + ':0': n for n in OUTPUT_NAMES})
    with warnings.catch_warnings(), deprecation.silence():
        warnings.simplefilter('ignore')
        model, _ = tf2onnx.convert.from_graph_def(
            graph_def, input_names=[INPUT_NAME + ':0'],
            output_names=[n + ':0' for n in OUTPUT_NAMES],
            opset=opset, tensors_to_rename=names)
    return model


class OnnxRuntime(Runtime):
    """The graph converted by tf2onnx, run by ONNX Runtime on the CPU."""

    name = 'onnxruntime'

    def __init__(self, graph_def=None, model_bytes=None, num_threads=None):
        ort = require('onnxruntime', 'onnx')
        if model_bytes is None:
            model_bytes = onnx_model(graph_def).SerializeToString()
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.num_threads = num_threads
        if num_threads:
            options.intra_op_num_threads = num_threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            model_bytes, options, providers=['CPUExecutionProvider'])
        self._input = self.session.get_inputs()[0].name
        self._outputs = [OUTPUT_NAME]

    def run(self, images):
        return self.session.run(self._outputs,
                                {self._input: _check_images(images)})[0]


def openvino_model(graph_def):
    """The folded GraphDef as an `openvino.Model` (its TensorFlow frontend)."""
    ov = require('openvino', 'openvino')
    return ov.convert_model(graph_def)


def openvino_compile(model, num_threads=None):
    """Compiles for the CPU in float32: OpenVINO would otherwise run bf16
    on CPUs that have it, about 1e-3 off TensorFlow.  `num_threads`: its
    INFERENCE_NUM_THREADS (None: OpenVINO's default)."""
    ov = require('openvino', 'openvino')
    config = {ov.properties.hint.inference_precision: ov.Type.f32}
    if num_threads:
        config[ov.properties.inference_num_threads] = num_threads
    return ov.Core().compile_model(model, 'CPU', config)


class OpenVINORuntime(Runtime):
    """The graph converted by OpenVINO, compiled for the CPU in float32."""

    name = 'openvino'

    def __init__(self, graph_def=None, model=None, num_threads=None):
        if model is None:
            model = openvino_model(graph_def)
        self.num_threads = num_threads
        self.compiled = openvino_compile(model, num_threads)
        outputs = [o for o in self.compiled.outputs
                   if any(n.split(':')[0] == OUTPUT_NAME
                          for n in o.get_names())]
        self._output = (outputs or list(self.compiled.outputs))[-1]
        self._request = self.compiled.create_infer_request()

    def run(self, images):
        self._request.infer([_check_images(images)])
        return np.array(self._request.get_tensor(self._output).data)


_CLASSES = {'tensorflow': TensorFlowRuntime, 'tflite': TFLiteRuntime,
            'onnxruntime': OnnxRuntime, 'openvino': OpenVINORuntime}


def load(graph_def, runtime='auto', cache_dir=None, model_key=None,
         num_threads=None):
    """Loads a folded inference GraphDef into `runtime`.

    Args:
      graph_def: from `optimize.frozen_inference_graph` (input 'input',
        output 'probabilities').
      runtime: one of `CHOICES`.
      cache_dir: where `auto` remembers its choices (default the checkpoint
        cache, `checkpoints.cache_dir`).
      model_key: names the model in that memory (default a digest of the
        graph's structure).
      num_threads: threads every runtime runs on (TFLite num_threads, ONNX
        Runtime intra_op_num_threads, OpenVINO INFERENCE_NUM_THREADS,
        TensorFlow the session's intra/inter-op threads); None: each
        runtime's default (TFLite: os.cpu_count()).

    Raises:
      InputError: unknown runtime.  MissingExtraError: its package is absent.
    """
    if runtime not in CHOICES:
        raise InputError('unknown runtime %r; choose from %s' % (
            runtime, ', '.join(CHOICES)))
    if runtime == 'auto':
        return AutoRuntime(graph_def, cache_dir=cache_dir, model_key=model_key,
                           num_threads=num_threads)
    modules, extra = _PACKAGES.get(runtime, ((), None))
    for module in modules:
        require(module, extra)
    return _CLASSES[runtime](graph_def, num_threads=num_threads)


# ------------------------------------------------------------------ auto

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
            self.loaded[name] = _CLASSES[name](self.graph_def,
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
        images = _check_images(images)
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
