"""Which checkpoints hold quantization ranges (a QAT checkpoint)."""

from slimnets import checkpoints

__all__ = ['RANGE_SUFFIXES', 'quantization_ranges', 'has_quantization_ranges']

RANGE_SUFFIXES = ('_quant/min', '_quant/max')


def quantization_ranges(checkpoint_prefix):
    """The names of the quantization-range variables a checkpoint holds
    (`<layer>/weights_quant/min`, `<layer>/act_quant/max`, ...)."""
    return sorted(name for name in checkpoints.variable_shapes(
        checkpoint_prefix) if name.endswith(RANGE_SUFFIXES))


def has_quantization_ranges(checkpoint_prefix):
    """True when the checkpoint carries weights_quant ranges: it was trained
    under `create_training_graph` (or recovered from a quantized TFLite
    file) and is evaluated in the `create_eval_graph` form."""
    return any('/weights_quant/' in name
               for name in quantization_ranges(checkpoint_prefix))
