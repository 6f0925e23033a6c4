"""The public rewrites: tf.contrib.quantize's API on tf.compat.v1 graphs.

Build the float network in a graph, then call one of these on that graph
(before creating the optimizer for training graphs):

    create_training_graph(graph, quant_delay=N)   # then train as usual
    create_eval_graph(graph)                      # then restore and run

Both fold batch norms into the convolutions and insert fake quantization;
see `fold_batch_norms` and `quantize` for what exactly.  A graph is
rewritten once: a second rewrite raises `QuantizationError`.
"""

import tensorflow.compat.v1 as tf

from slimnets.errors import QuantizationError
from slimnets.quantize import common
from slimnets.quantize import fold_batch_norms
from slimnets.quantize import quantize

__all__ = [
    'create_training_graph', 'create_eval_graph',
    'experimental_create_training_graph', 'experimental_create_eval_graph',
]


def _check_bits(name, bits):
    if not isinstance(bits, int) or not 2 <= bits <= 8:
        raise QuantizationError('%s must be an integer from 2 to 8, got %r'
                                % (name, bits))


def _create_graph(input_graph=None, is_training=True, weight_bits=8,
                  activation_bits=8, symmetric=False, quant_delay=None,
                  freeze_bn_delay=None, scope=None):
    if input_graph is None:
        input_graph = tf.get_default_graph()
    _check_bits('weight_bits', weight_bits)
    _check_bits('activation_bits', activation_bits)
    if any(op.type in common.FAKE_QUANT_TYPES
           for op in input_graph.get_operations()):
        raise QuantizationError(
            'the graph is already quantized (it holds FakeQuant ops); '
            'rewrite a freshly built float graph')
    with input_graph.as_default():
        fold_batch_norms.FoldBatchNorms(
            input_graph, is_training=is_training,
            freeze_batch_norm_delay=freeze_bn_delay)
        quantize.Quantize(input_graph, is_training, weight_bits=weight_bits,
                          activation_bits=activation_bits,
                          symmetric=symmetric, quant_delay=quant_delay,
                          scope=scope)


def create_training_graph(input_graph=None, quant_delay=0):
    """Rewrites a float training graph for quantization-aware training.

    Batch norms are folded with batch-statistics corrections; weights and
    activations get 8-bit fake quantization with learned ranges.

    Args:
      input_graph: the tf.Graph to rewrite in place (default: the default
        graph).  Call before building the optimizer.
      quant_delay: training runs before fake quantization takes effect;
        the ranges are learned from the start.
    """
    _create_graph(input_graph=input_graph, is_training=True,
                  quant_delay=quant_delay, freeze_bn_delay=None)


def create_eval_graph(input_graph=None):
    """Rewrites a float eval graph into the 8-bit fake-quantized one.

    The graph then carries `<layer>/weights_quant/{min,max}` and
    `<layer>/act_quant/{min,max}` variables, restored from a QAT checkpoint.
    """
    _create_graph(input_graph=input_graph, is_training=False)


def experimental_create_training_graph(input_graph=None,
                                       weight_bits=8,
                                       activation_bits=8,
                                       symmetric=False,
                                       quant_delay=0,
                                       freeze_bn_delay=None,
                                       scope=None):
    """`create_training_graph` with every knob.

    Args:
      input_graph: the tf.Graph to rewrite (default: the default graph).
      weight_bits, activation_bits: integer widths, 2 to 8.
      symmetric: symmetric ranges (zero point in the middle).
      quant_delay: runs before fake quantization takes effect.
      freeze_bn_delay: None, or the run from which batch norms use (and
        stop updating) their moving statistics.
      scope: only rewrite ops under this name scope.
    """
    _create_graph(input_graph=input_graph, is_training=True,
                  weight_bits=weight_bits, activation_bits=activation_bits,
                  symmetric=symmetric, quant_delay=quant_delay,
                  freeze_bn_delay=freeze_bn_delay, scope=scope)


def experimental_create_eval_graph(input_graph=None,
                                   weight_bits=8,
                                   activation_bits=8,
                                   symmetric=False,
                                   quant_delay=None,
                                   scope=None):
    """`create_eval_graph` with every knob (see
    `experimental_create_training_graph`)."""
    _create_graph(input_graph=input_graph, is_training=False,
                  weight_bits=weight_bits, activation_bits=activation_bits,
                  symmetric=symmetric, quant_delay=quant_delay, scope=scope)
