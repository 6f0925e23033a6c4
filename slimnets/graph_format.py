"""Names that define slimnets' inference GraphDef (frozen, batch norm folded).

`slimnets.optimize` writes graphs in this form; exports, runtimes and the
checkpoint converters read them.  Kept here, below all of them, so a reader
never has to import the writer.
"""

__all__ = ['INPUT_NAME', 'OUTPUT_NAMES', 'INPUT_SCALE_ATTR', 'MAX_BATCH_SIZE',
           'MIN_IMAGE_SIZE', 'MAX_IMAGE_SIZE']

INPUT_NAME = 'input'              # [batch, size, size, 3] float32 in [-1, 1]
OUTPUT_NAMES = ('logits', 'probabilities')  # [batch, num_classes]
# Attribute on a convolution whose weights absorbed a constant scaling of its
# input (hard-swish's * 1/6); converters divide it back out.
INPUT_SCALE_ATTR = '_slimnets_input_scale'
# The largest fixed batch size an export takes (`export --batch-size`): the
# self-check runs a probe batch of that size through the source graph and
# the artifact at once (0.6 MB per 224 px image for the input alone, the
# activations several times that), so a bound keeps it within memory.
MAX_BATCH_SIZE = 256
# The input sizes a network is built at: the networks downsample by 32, and
# above 2048 px a single image's activations take gigabytes.
MIN_IMAGE_SIZE = 32
MAX_IMAGE_SIZE = 2048
