"""The 'tflite' runtime: the graph converted to TFLite, run by LiteRT
(`ai-edge-litert`, extra `litert`) when installed, else by `tf.lite`
(XNNPACK on CPU)."""

import warnings

import tensorflow as tf2
import tensorflow.compat.v1 as tf

from slimnets.graph_format import INPUT_NAME
from slimnets.runtimes.base import OUTPUT_NAME
from slimnets.runtimes.base import Runtime
from slimnets.runtimes.base import check_images
from slimnets.runtimes.base import thread_count

__all__ = ['TFLiteRuntime', 'tflite_model', 'tflite_interpreter']

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
        self.num_threads = thread_count(num_threads)
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
        images = check_images(images)
        if self._shape != images.shape:
            self.interpreter.resize_tensor_input(self._input,
                                                 list(images.shape))
            self.interpreter.allocate_tensors()
            self._shape = images.shape
        self.interpreter.set_tensor(self._input, images)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._output).copy()
