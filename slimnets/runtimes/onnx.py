"""The 'onnxruntime' runtime: the graph converted by tf2onnx (opset
`ONNX_OPSET`), run by ONNX Runtime on the CPU (extra `onnx`)."""

import warnings

from tensorflow.python.util import deprecation  # pylint: disable=g-direct-tensorflow-import

from slimnets.graph_format import INPUT_NAME
from slimnets.graph_format import OUTPUT_NAMES
from slimnets.runtimes.base import OUTPUT_NAME
from slimnets.runtimes.base import Runtime
from slimnets.runtimes.base import check_images
from slimnets.runtimes.base import require
from slimnets.runtimes.base import thread_count

__all__ = ['ONNX_OPSET', 'OnnxRuntime', 'onnx_model']

ONNX_OPSET = 17


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
        self.num_threads = thread_count(num_threads)
        options.intra_op_num_threads = self.num_threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            model_bytes, options, providers=['CPUExecutionProvider'])
        self._input = self.session.get_inputs()[0].name
        self._outputs = [OUTPUT_NAME]

    def run(self, images):
        return self.session.run(self._outputs,
                                {self._input: check_images(images)})[0]
