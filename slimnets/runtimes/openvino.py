"""The 'openvino' runtime: the graph converted by `openvino.convert_model`
and compiled for the CPU in float32 (extra `openvino`)."""

import numpy as np

from slimnets.runtimes.base import OUTPUT_NAME
from slimnets.runtimes.base import Runtime
from slimnets.runtimes.base import check_images
from slimnets.runtimes.base import require
from slimnets.runtimes.base import thread_count

__all__ = ['OpenVINORuntime', 'openvino_model', 'openvino_compile']

def openvino_model(graph_def):
    """The folded GraphDef as an `openvino.Model` (its TensorFlow frontend)."""
    ov = require('openvino', 'openvino')
    return ov.convert_model(graph_def)


def openvino_compile(model, num_threads=None):
    """Compiles for the CPU in float32: OpenVINO would otherwise run bf16
    on CPUs that have it, about 1e-3 off TensorFlow.  `num_threads`: its
    INFERENCE_NUM_THREADS (None: every core, `thread_count`)."""
    ov = require('openvino', 'openvino')
    config = {ov.properties.hint.inference_precision: ov.Type.f32,
              ov.properties.inference_num_threads: thread_count(num_threads)}
    return ov.Core().compile_model(model, 'CPU', config)


class OpenVINORuntime(Runtime):
    """The graph converted by OpenVINO, compiled for the CPU in float32."""

    name = 'openvino'

    def __init__(self, graph_def=None, model=None, num_threads=None):
        if model is None:
            model = openvino_model(graph_def)
        self.num_threads = thread_count(num_threads)
        self.compiled = openvino_compile(model, self.num_threads)
        outputs = [o for o in self.compiled.outputs
                   if any(n.split(':')[0] == OUTPUT_NAME
                          for n in o.get_names())]
        self._output = (outputs or list(self.compiled.outputs))[-1]
        self._request = self.compiled.create_infer_request()

    def run(self, images):
        self._request.infer([check_images(images)])
        return np.array(self._request.get_tensor(self._output).data)
