"""Quantization-aware training for slim graphs: tf.contrib.quantize's API.

    from slimnets import quantize
    quantize.create_training_graph(graph, quant_delay=2000)
    quantize.create_eval_graph(graph)

Variable and op names follow tf.contrib.quantize, so checkpoints of
Google's `_quant` models restore into a `create_eval_graph` graph.
"""

from slimnets.errors import QuantizationError  # noqa: F401
from slimnets.quantize.quantize_graph import create_eval_graph  # noqa: F401
from slimnets.quantize.quantize_graph import create_training_graph  # noqa: F401
from slimnets.quantize.quantize_graph import experimental_create_eval_graph  # noqa: F401
from slimnets.quantize.quantize_graph import experimental_create_training_graph  # noqa: F401
from slimnets.quantize.ranges import has_quantization_ranges  # noqa: F401
from slimnets.quantize.ranges import quantization_ranges  # noqa: F401
