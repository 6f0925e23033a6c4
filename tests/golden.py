"""The self-contained golden set (tests/data/, PROVENANCE.md there).

Three reference configurations, one per family, whose variable names and
shapes come from the reference manifests and whose logits for a fixed input
and fixed synthetic weights were computed by slimnets at a commit that
reproduced every reference fixture; plus Google's MobileNet v1 0.25_128
weights, stored losslessly, and one real image.  Needs no ../shared.
"""

import json
import os
import zlib

import numpy as np
import tensorflow.compat.v1 as tf

from slimnets import mobilenet_v1
from slimnets import slim
from slimnets.mobilenet import mobilenet_v2
from slimnets.mobilenet import mobilenet_v3

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data')

CONFIGURATIONS = {
    'v1_025_112': dict(
        fixture='v1_025_112_small_input', input_shape=[1, 112, 112, 3],
        scope=lambda: mobilenet_v1.mobilenet_v1_arg_scope(is_training=False),
        network=lambda x: mobilenet_v1.mobilenet_v1(
            x, num_classes=10, is_training=False, depth_multiplier=0.25)),
    'v2_035_96': dict(
        fixture='v2_035_96', input_shape=[2, 96, 96, 3],
        scope=lambda: mobilenet_v2.training_scope(is_training=False),
        network=mobilenet_v2.mobilenet_v2_035),
    'v3_small_050_96': dict(
        fixture='v3_small_050_96_c10', input_shape=[2, 96, 96, 3],
        scope=lambda: mobilenet_v3.training_scope(is_training=False),
        network=lambda x: mobilenet_v3.small(
            x, depth_multiplier=0.5, num_classes=10)),
}


def synthetic_value(name, shape, dtype):
    """Deterministic weights for variable `name` (legacy RandomState, stable
    across NumPy versions), scaled so activations stay O(1)."""
    if dtype.is_integer:
        return np.zeros(shape, dtype.as_numpy_dtype)
    rng = np.random.RandomState(zlib.crc32(name.encode('utf-8')))
    if name.endswith(('moving_variance', 'gamma')):
        value = rng.uniform(0.5, 1.5, shape)
    elif name.endswith(('weights', 'depthwise_weights')):
        fan_in = np.prod(shape[:2] if 'depthwise' in name else shape[:-1])
        value = rng.normal(0.0, 1.0 / np.sqrt(max(fan_in, 1)), shape)
    else:
        value = rng.uniform(-0.1, 0.1, shape)
    return value.astype(dtype.as_numpy_dtype)


def fixed_input(shape):
    """The golden input: uniform in [-1, 1], seed 0."""
    return np.random.RandomState(0).uniform(-1, 1, shape).astype(np.float32)


def build(name):
    """Builds configuration `name` in a new graph.

    Returns:
      {'graph', 'input' (placeholder), 'logits', 'variables'}.
    """
    config = CONFIGURATIONS[name]
    graph = tf.Graph()
    with graph.as_default():
        images = tf.placeholder(tf.float32, config['input_shape'])
        with slim.arg_scope(config['scope']()):
            logits, _ = config['network'](images)
        variables = tf.global_variables()
    return {'graph': graph, 'input': images, 'logits': logits,
            'variables': variables}


def logits(built):
    """The logits of a built configuration with the synthetic weights on
    the golden input: [batch, classes] float32."""
    with built['graph'].as_default():
        loads = [v.assign(synthetic_value(v.op.name, v.shape.as_list(),
                                          v.dtype.base_dtype))
                 for v in built['variables']]
    with tf.Session(graph=built['graph']) as sess:
        sess.run(loads)
        return sess.run(built['logits'], {
            built['input']: fixed_input(built['input'].shape.as_list())})


def load():
    """(golden.json as a dict, golden.npz as a dict of arrays)."""
    with open(os.path.join(DATA, 'golden.json')) as handle:
        document = json.load(handle)
    with np.load(os.path.join(DATA, 'golden.npz')) as arrays:
        return document, dict(arrays)


def real_weights(arrays):
    """Google's MobileNet v1 0.25_128 variables {name: array}, decoded."""
    weights = {}
    for key, value in arrays.items():
        if key.startswith('real/raw/'):
            weights[key[len('real/raw/'):]] = value
        elif key.startswith('real/table/'):
            name = key[len('real/table/'):]
            weights[name] = value[arrays['real/codes/' + name]]
    return weights
