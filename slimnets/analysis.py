"""Counting what a built network costs: parameters, multiply-accumulates
and speed."""

import time

import numpy as np
import tensorflow.compat.v1 as tf

from slimnets import nets_factory
from slimnets import registry
from slimnets.errors import InputError

__all__ = [
    'PUBLISHED', 'KNOWN_DIFFERENCES', 'PARAMS_TOLERANCE',
    'check_published_params', 'count_parameters', 'count_macs',
    'network_report',
]

# Published figures (millions) of the factory networks at their default
# depth multiplier, 224x224 input and 1001 classes (research/slim READMEs),
# and where a figure is known not to describe the released graph: views of
# the registry.
PUBLISHED = {n.name: {'params': n.params_millions, 'macs': n.macs_millions}
             for n in registry.NETWORKS.values()
             if n.params_millions is not None}
KNOWN_DIFFERENCES = {n.name: n.known_difference
                     for n in registry.NETWORKS.values() if n.known_difference}

# Published parameter counts are rounded (to 0.01M or 0.1M): allow that.
PARAMS_TOLERANCE = 0.04


def check_published_params(name, params):
    """Compares a parameter count with the published one.

    Returns:
      (verdict, published millions or None, relative deviation or None),
      verdict one of 'ok', 'known' (see KNOWN_DIFFERENCES), 'DIFFERS' or
      'unpublished'.
    """
    published = PUBLISHED.get(name)
    if not published:
        return 'unpublished', None, None
    deviation = params / 1e6 / published['params'] - 1
    if abs(deviation) <= PARAMS_TOLERANCE:
        verdict = 'ok'
    else:
        verdict = 'known' if name in KNOWN_DIFFERENCES else 'DIFFERS'
    return verdict, published['params'], deviation


def count_parameters(variables):
    """Total number of elements of `variables` (fully defined shapes)."""
    return int(sum(np.prod(v.shape.as_list()) for v in variables))


def _static_elements(shape):
    dims = shape.as_list() if shape.dims is not None else None
    if not dims or any(d is None for d in dims[1:]):
        return None
    return int(np.prod(dims[1:]))


def count_macs(graph=None):
    """Multiply-accumulates per example of the convolutions and matmuls.

    Counts Conv2D (out_h * out_w * kh * kw * in_c * out_c),
    DepthwiseConv2dNative (out_h * out_w * kh * kw * in_c * multiplier) and
    MatMul (in * out).  Shapes must be static except for the batch.

    Returns:
      An int.
    """
    graph = graph or tf.get_default_graph()
    total = 0
    for graph_op in graph.get_operations():
        if graph_op.type not in ('Conv2D', 'DepthwiseConv2dNative', 'MatMul'):
            continue
        kernel_shape = graph_op.inputs[1].shape.as_list()
        if graph_op.type == 'MatMul':
            total += int(np.prod(kernel_shape))
            continue
        output_elements = _static_elements(graph_op.outputs[0].shape)
        if output_elements is None:
            raise InputError('count_macs needs static spatial shapes; %s has '
                             'output shape %s.' % (graph_op.name,
                                                   graph_op.outputs[0].shape))
        kernel_h, kernel_w, in_channels = kernel_shape[:3]
        total += output_elements * kernel_h * kernel_w * (
            in_channels if graph_op.type == 'Conv2D' else 1)
    return int(total)


def network_report(name, image_size=None, timing_runs=5):
    """Builds factory network `name` (1001 classes) and measures it.

    Returns:
      A dict: name, image size, parameters, MACs, variables, endpoints,
      build seconds and milliseconds per image (batch 1, median of
      `timing_runs`).
    """
    network_fn = nets_factory.get_network_fn(name, 1001)
    size = image_size or network_fn.default_image_size
    with tf.Graph().as_default() as graph:
        images = tf.placeholder(tf.float32, [1, size, size, 3])
        start = time.perf_counter()
        logits, end_points = network_fn(images)
        build_seconds = time.perf_counter() - start
        report = {
            'network': name, 'image_size': size,
            'params': count_parameters(tf.trainable_variables()),
            'macs': count_macs(graph),
            'variables': len(tf.global_variables()),
            'endpoints': len(end_points), 'build_s': build_seconds,
        }
        batch = np.random.RandomState(0).uniform(-1, 1, [1, size, size, 3])
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            sess.run(logits, {images: batch})  # warm-up
            times = []
            for _ in range(timing_runs):
                start = time.perf_counter()
                sess.run(logits, {images: batch})
                times.append(time.perf_counter() - start)
    report['ms_per_image'] = 1000 * float(np.median(times))
    return report
