"""Inference runtimes behind one interface.

Every runtime runs the same folded inference graph (`slimnets.optimize`:
input 'input' [N, size, size, 3] in [-1, 1], output 'probabilities'
[N, num_classes]) and answers `run(images) -> probabilities`:

  tensorflow   the GraphDef, rewritten for TensorFlow's CPU kernels
               (`rewrite_for_tensorflow_cpu`: small pointwise
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

One module per runtime (`slimnets.runtimes.tensorflow`, `.tflite`,
`.onnx`, `.openvino`), the chooser (`.auto`) and what they share
(`.base`: the interface, the optional packages, the thread count).
"""

from slimnets.errors import InputError
from slimnets.runtimes.auto import AGREEMENT
from slimnets.runtimes.auto import AUTO_FILE
from slimnets.runtimes.auto import CLASSES
from slimnets.runtimes.auto import MEASURE_ORDER
from slimnets.runtimes.auto import AutoRuntime
from slimnets.runtimes.auto import batch_bucket
from slimnets.runtimes.auto import machine_key
from slimnets.runtimes.auto import structure_key
from slimnets.runtimes.auto import time_runtimes
from slimnets.runtimes.base import CHOICES
from slimnets.runtimes.base import OUTPUT_NAME
from slimnets.runtimes.base import PACKAGES
from slimnets.runtimes.base import RUNTIMES
from slimnets.runtimes.base import Runtime
from slimnets.runtimes.base import installed
from slimnets.runtimes.base import is_installed
from slimnets.runtimes.base import release_memory
from slimnets.runtimes.base import require
from slimnets.runtimes.base import thread_count
from slimnets.runtimes.onnx import ONNX_OPSET
from slimnets.runtimes.onnx import OnnxRuntime
from slimnets.runtimes.onnx import onnx_model
from slimnets.runtimes.openvino import OpenVINORuntime
from slimnets.runtimes.openvino import openvino_compile
from slimnets.runtimes.openvino import openvino_model
from slimnets.runtimes.tensorflow import ONE_THREAD_BATCH
from slimnets.runtimes.tensorflow import CpuRewrite
from slimnets.runtimes.tensorflow import TensorFlowRuntime
from slimnets.runtimes.tensorflow import rewrite_for_tensorflow_cpu
from slimnets.runtimes.tflite import TFLiteRuntime
from slimnets.runtimes.tflite import tflite_interpreter
from slimnets.runtimes.tflite import tflite_model

__all__ = [
    'AGREEMENT', 'AUTO_FILE', 'AutoRuntime', 'CHOICES', 'CLASSES',
    'CpuRewrite', 'MEASURE_ORDER', 'ONE_THREAD_BATCH', 'ONNX_OPSET',
    'OUTPUT_NAME', 'OnnxRuntime', 'PACKAGES', 'OpenVINORuntime', 'RUNTIMES', 'Runtime',
    'TFLiteRuntime', 'TensorFlowRuntime', 'batch_bucket', 'installed',
    'is_installed', 'load', 'machine_key', 'onnx_model', 'openvino_compile',
    'openvino_model', 'release_memory', 'require',
    'rewrite_for_tensorflow_cpu', 'structure_key', 'thread_count',
    'time_runtimes', 'tflite_interpreter', 'tflite_model',
]



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
    modules, extra = PACKAGES.get(runtime, ((), None))
    for module in modules:
        require(module, extra)
    return CLASSES[runtime](graph_def, num_threads=num_threads)
