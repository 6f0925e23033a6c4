"""Quantization-aware training for slim graphs: tf.contrib.quantize's API.

    from slimnets import quantize
    quantize.create_training_graph(graph, quant_delay=2000)
    quantize.create_eval_graph(graph)

Variable and op names follow tf.contrib.quantize, so checkpoints of
Google's `_quant` models restore into a `create_eval_graph` graph.
"""

from slimnets.errors import QuantizationError
from slimnets.quantize.quantize_graph import create_eval_graph
from slimnets.quantize.quantize_graph import create_training_graph
from slimnets.quantize.quantize_graph import experimental_create_eval_graph
from slimnets.quantize.quantize_graph import experimental_create_training_graph
from slimnets.quantize.ranges import has_quantization_ranges
from slimnets.quantize.ranges import quantization_ranges

__all__ = [
    'QuantizationError', 'create_eval_graph', 'create_training_graph',
    'experimental_create_eval_graph', 'experimental_create_training_graph',
    'has_quantization_ranges', 'quantization_ranges',
]
