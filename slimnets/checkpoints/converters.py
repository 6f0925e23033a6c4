"""Recovering slim checkpoints from frozen graphs and TFLite files.

Both formats usually hold *folded* layers: each convolution's weights plus
one bias, the batch norm folded in.  A folded layer becomes slim variables
again as the exact identity batch norm:

    weights = the folded weights,  gamma = 1,  beta = bias,
    moving_mean = 0,  moving_variance = 1 - epsilon

so that (x - 0) / sqrt(1 - epsilon + epsilon) * 1 + bias = x + bias.
Layers that have biases in slim (logits, squeeze-excite, the v3 head) keep
them as `biases`.  Unfolded frozen graphs (variables frozen under their own
names) are read back as they are.

The network is identified from the recovered weights, built, and every one
of its variables must be recovered with its shape, or nothing is written.
"""

import collections
import functools
import os
import re
import warnings

import numpy as np
import tensorflow as tf2
import tensorflow.compat.v1 as tf

from slimnets import model_info
from slimnets import nets_factory
from slimnets import registry
from slimnets.checkpoints import identification
from slimnets.checkpoints import tflite_verify
from slimnets.errors import CheckpointError
from slimnets.graph_format import INPUT_NAME
from slimnets.graph_format import INPUT_SCALE_ATTR

__all__ = [
    'BATCH_NORM_EPSILON', 'FoldedLayer', 'write_checkpoint',
    'layers_to_variables', 'target_variables', 'network_kwargs',
    'write_model_info', 'tflite_layers', 'tflite_to_float_checkpoint',
    'frozen_graph_layers', 'frozen_graph_to_checkpoint',
]

BATCH_NORM_EPSILON = 0.001
_VARIABLE_SUFFIXES = ('weights', 'depthwise_weights', 'pointwise_weights',
                      'biases', 'gamma', 'beta', 'moving_mean',
                      'moving_variance')

# A folded layer: its variable scope, 'conv' or 'depthwise', the kernel in
# TF layout ([kh, kw, in, out] or [kh, kw, in, multiplier]) and the bias.
FoldedLayer = collections.namedtuple('FoldedLayer',
                                     ['scope', 'kind', 'kernel', 'bias'])


def write_checkpoint(values, prefix):
    """Writes {variable name: array} as a TF1 checkpoint at `prefix`."""
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    with tf.Graph().as_default():
        variables = {}
        for name, value in sorted(values.items()):
            variables[name] = tf.Variable(
                np.asarray(value), name=name.replace(':', '_'),
                trainable=False, collections=[])
        saver = tf.train.Saver(var_list=variables)
        with tf.Session() as sess:
            sess.run([v.initializer for v in variables.values()])
            return saver.save(sess, prefix, write_meta_graph=False,
                              write_state=False)


def _kernel_name(scope, kind):
    return scope + ('/depthwise_weights' if kind == 'depthwise' else '/weights')


def layers_to_variables(layers, target_shapes):
    """Turns folded layers into the slim variables `target_shapes` expects.

    Args:
      layers: [FoldedLayer].
      target_shapes: {variable name: shape} of the network to fill.

    Returns:
      {variable name: array}.

    Raises:
      CheckpointError: a layer has no place in the target or a shape differs.
    """
    values = {}
    for layer in layers:
        kernel_name = _kernel_name(layer.scope, layer.kind)
        if kernel_name not in target_shapes:
            raise CheckpointError('recovered layer %s has no variable %s in '
                                  'the target network' % (layer.scope,
                                                          kernel_name))
        values[kernel_name] = layer.kernel
        bias = layer.bias if layer.bias is not None else np.zeros(
            layer.kernel.shape[-1] if layer.kind == 'conv' else
            layer.kernel.shape[2] * layer.kernel.shape[3], np.float32)
        batch_norm = layer.scope + '/BatchNorm/'
        if batch_norm + 'moving_mean' in target_shapes:
            channels = bias.shape[0]
            if batch_norm + 'gamma' in target_shapes:
                values[batch_norm + 'gamma'] = np.ones(channels, np.float32)
            values[batch_norm + 'beta'] = bias.astype(np.float32)
            values[batch_norm + 'moving_mean'] = np.zeros(channels, np.float32)
            values[batch_norm + 'moving_variance'] = np.full(
                channels, 1.0 - BATCH_NORM_EPSILON, np.float32)
        elif layer.scope + '/biases' in target_shapes:
            values[layer.scope + '/biases'] = bias.astype(np.float32)
        elif np.any(bias):
            raise CheckpointError('recovered layer %s has a bias but the '
                                  'target network gives it neither batch norm '
                                  'nor biases' % layer.scope)
    return values


def _pseudo_shapes(layers):
    return {_kernel_name(layer.scope, layer.kind): list(layer.kernel.shape)
            for layer in layers}


def target_variables(shapes_or_layers, num_classes=None):
    """Identifies the network and returns its {variable name: shape}.

    Args:
      shapes_or_layers: {name: shape} or [FoldedLayer] of recovered weights.
      num_classes: classes of the logits (default: from the weights).
    """
    shapes = (_pseudo_shapes(shapes_or_layers)
              if isinstance(shapes_or_layers, list) else shapes_or_layers)
    identity = identification.identify(shapes)
    if identity.family is None or identity.network is None or \
            identity.depth_multiplier is None:
        raise CheckpointError('the recovered weights are not a known MobileNet '
                              '(%s)' % identification.describe(identity))
    logits = [s for n, s in shapes.items() if '/Logits/Conv2d_1c_1x1/' in n]
    classes = num_classes or (logits[0][-1] if logits else 1001)
    kwargs = network_kwargs(identity)
    identity = identity._replace(num_classes=classes if logits else None)
    return identity, dict(_network_shapes(
        identity.network, tuple(sorted(kwargs.items())), classes,
        identity.scope))


def network_kwargs(identity):
    """The network keyword arguments of an identified MobileNet."""
    kwargs = {'depth_multiplier': identity.depth_multiplier}
    if identity.finegrain:
        kwargs['finegrain_classification_mode'] = True
    return kwargs


def write_model_info(prefix, identity, image_size, source, label_offset=None,
                     input_stats=None):
    """Records beside the checkpoint `prefix` what it is
    (`slimnets.model_info`): the identified network and its kwargs, the
    input size (None: unknown), the classes and the label offset (default
    slim's convention: 1 for 1001 classes, else 0)."""
    classes = identity.num_classes or 1001
    return model_info.write(prefix, model_info.ModelInfo(
        identity.network, network_kwargs(identity), image_size, classes,
        model_info.label_offset_for(classes) if label_offset is None else
        label_offset, input_stats, source))


@functools.lru_cache(maxsize=32)
def _network_shapes(network, kwargs_items, classes, scope):
    """{variable name: shape} of a built network (cached: building takes
    about a second, and converters call this once per file)."""
    spec = registry.ModelSpec(network, dict(kwargs_items), 224, classes)
    with tf.Graph().as_default():
        images = tf.placeholder(tf.float32, [1, 224, 224, 3])
        if '/' in scope:
            with tf.variable_scope(scope.rsplit('/', 1)[0]):
                nets_factory.build_network(spec, images)
        else:
            nets_factory.build_network(spec, images)
        return {v.op.name: v.shape.as_list() for v in tf.global_variables()}


def _check_complete(values, target_shapes, source):
    missing = [n for n in target_shapes if n not in values and
               not n.endswith('global_step')]
    wrong = [(n, list(values[n].shape), target_shapes[n]) for n in values
             if n in target_shapes and list(values[n].shape) != target_shapes[n]]
    if missing or wrong:
        raise CheckpointError(
            'cannot make a complete checkpoint from %s: %s%s' % (
                source, ('%d variables not recovered (%s)' % (
                    len(missing), ', '.join(missing[:5]))) if missing else '',
                ('; mis-shaped: %s' % wrong[:3]) if wrong else ''))


# ---------------------------------------------------------------- TFLite

def _dequantize(interpreter, detail):
    value = interpreter.get_tensor(detail['index'])
    if value.dtype in (np.float32, np.float16):
        return value.astype(np.float32)
    params = detail['quantization_parameters']
    scales, zero_points = params['scales'], params['zero_points']
    if scales.size == 0:
        scale, zero_point = detail['quantization']
        scales, zero_points = np.array([scale]), np.array([zero_point])
    axis = params['quantized_dimension']
    shape = [1] * value.ndim
    if scales.size > 1:
        shape[axis] = scales.size
    scales = scales.reshape(shape).astype(np.float64)
    zero_points = zero_points.reshape(shape).astype(np.float64)
    return ((value.astype(np.float64) - zero_points) * scales).astype(
        np.float32)


def _collapse_repeated_root(scope):
    """'MobilenetV1/MobilenetV1/Conv2d_0' -> 'MobilenetV1/Conv2d_0'.

    Classifiers re-enter their variable scope inside its own name scope, so
    op names repeat the root while variable names do not.
    """
    parts = scope.split('/')
    if len(parts) > 1 and parts[0] == parts[1]:
        parts = parts[1:]
    return '/'.join(parts)


def _scope_of(tensor_name):
    """'.../MobilenetV1/MobilenetV1/Conv2d_0/weights_quant/...' ->
    'MobilenetV1/Conv2d_0' (the slim variable scope of a weight tensor)."""
    for piece in tensor_name.split(';'):
        match = re.match(r'(.*?)/(?:depthwise_)?weights(?:_quant|/|$)', piece)
        if match:
            return _collapse_repeated_root(match.group(1))
    return None


def tflite_layers(model_path):
    """The folded convolution layers of a TFLite MobileNet, dequantized.

    The file is verified (`tflite_verify`) before TensorFlow Lite parses it,
    so a damaged file raises CheckpointError instead of crashing Python.

    Returns:
      [FoldedLayer] in the file's order.
    """
    return _read_tflite(model_path)[0]


def _read_tflite(model_path):
    """([FoldedLayer], the input's height or None) of a TFLite file."""
    if not os.path.isfile(model_path):
        raise CheckpointError('no TFLite file at %s' % model_path)
    if os.path.getsize(model_path) > tflite_verify.MAX_BYTES:
        raise CheckpointError('%s is larger than a TFLite model can be'
                              % model_path)
    with open(model_path, 'rb') as handle:
        content = handle.read()
    tflite_verify.verify(content, model_path)
    try:
        return _interpreter_layers(content, model_path)
    except CheckpointError:
        raise
    except (KeyError, IndexError, ValueError, RuntimeError,
            TypeError) as error:
        raise CheckpointError('%s is not a TFLite MobileNet slimnets can '
                              'read (%s: %s)' % (model_path,
                                                 type(error).__name__,
                                                 error)) from None


def _interpreter_layers(content, model_path):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)
        interpreter = tf2.lite.Interpreter(model_content=content)
    details = {d['index']: d for d in interpreter.get_tensor_details()}
    layers = []
    for op in interpreter._get_ops_details():  # pylint: disable=protected-access
        if op['op_name'] not in ('CONV_2D', 'DEPTHWISE_CONV_2D'):
            continue
        weight = details[op['inputs'][1]]
        kernel = _dequantize(interpreter, weight)
        scope = _scope_of(weight['name'])
        if scope is None:
            raise CheckpointError('cannot tell which slim layer the TFLite '
                                  'tensor %r belongs to' % weight['name'])
        if kernel.ndim != 4:
            raise CheckpointError('the TFLite weight %r is not 4-D'
                                  % weight['name'])
        if op['op_name'] == 'CONV_2D':  # [out, kh, kw, in] -> [kh, kw, in, out]
            kernel = kernel.transpose(1, 2, 3, 0)
            kind = 'conv'
        else:  # [1, kh, kw, in * m] -> [kh, kw, in, m]
            in_channels = details[op['inputs'][0]]['shape'][-1]
            kernel = kernel.reshape(kernel.shape[1], kernel.shape[2],
                                    in_channels, -1)
            kind = 'depthwise'
        bias = None
        if len(op['inputs']) > 2 and op['inputs'][2] >= 0:
            bias = _dequantize(interpreter, details[op['inputs'][2]])
        layers.append(FoldedLayer(scope, kind, kernel, bias))
    if not layers:
        raise CheckpointError('%s holds no convolutions' % model_path)
    shape = interpreter.get_input_details()[0]['shape']
    size = int(shape[1]) if len(shape) == 4 and shape[1] > 0 and (
        shape[1] == shape[2]) else None
    return layers, size


def tflite_to_float_checkpoint(model_path, output_prefix, num_classes=None):
    """Writes the float slim checkpoint of a (quantized) TFLite MobileNet.

    Beside it, `<prefix>.slimnets.json` records the network, the file's
    input size and the classes (`slimnets.model_info`).

    Returns:
      (checkpoint prefix, the network's `Identity`).
    """
    layers, size = _read_tflite(model_path)
    identity, target = target_variables(layers, num_classes)
    values = layers_to_variables(layers, target)
    _check_complete(values, target, model_path)
    prefix = write_checkpoint(values, output_prefix)
    write_model_info(prefix, identity, size, 'TFLite file %s (float weights)'
                     % os.path.basename(model_path))
    return prefix, identity


# ----------------------------------------------------------- frozen graph

def _graph_def(path_or_graph_def):
    if isinstance(path_or_graph_def, tf.GraphDef):
        return path_or_graph_def
    graph_def = tf.GraphDef()
    try:
        with open(path_or_graph_def, 'rb') as handle:
            graph_def.ParseFromString(handle.read())
    except (OSError, Exception) as error:  # protobuf DecodeError
        raise CheckpointError('%s is not a frozen GraphDef (%s)'
                              % (path_or_graph_def, error)) from None
    return graph_def


def frozen_graph_layers(graph_def):
    """Variables and folded layers recovered from a frozen GraphDef.

    Returns:
      ({variable name: array} of Consts named like slim variables,
       [FoldedLayer] of slimnets-exported folded convolutions).
    """
    nodes = {n.name: n for n in graph_def.node}
    consts = {n.name: tf.make_ndarray(n.attr['value'].tensor)
              for n in graph_def.node if n.op == 'Const'}
    direct = {name: value for name, value in consts.items()
              if name.rsplit('/', 1)[-1] in _VARIABLE_SUFFIXES}
    layers = []
    for node in graph_def.node:
        if node.op not in ('Conv2D', 'DepthwiseConv2dNative'):
            continue
        weights = node.input[1].split(':')[0]
        if not weights.endswith('/folded_weights'):
            continue
        consumers = [n for n in graph_def.node
                     if n.op == 'BiasAdd' and n.input[0].split(':')[0] ==
                     node.name]
        bias = consts.get(consumers[0].input[1].split(':')[0]) if consumers \
            else None
        # '<scope>/Conv2D' or '<scope>/depthwise' -> '<scope>'
        scope = _collapse_repeated_root(node.name.rsplit('/', 1)[0])
        kind = 'conv' if node.op == 'Conv2D' else 'depthwise'
        kernel = consts[weights]
        if INPUT_SCALE_ATTR in node.attr:  # a scaling folded in: undo it
            kernel = kernel / np.float32(node.attr[INPUT_SCALE_ATTR].f)
        layers.append(FoldedLayer(scope, kind, kernel, bias))
    del nodes
    return direct, layers


def frozen_graph_to_checkpoint(path_or_graph_def, output_prefix,
                               num_classes=None):
    """Writes the slim checkpoint of a frozen MobileNet GraphDef.

    Works on graphs frozen from slim variables (Consts keep the variable
    names: the values come back exactly) and on slimnets' folded exports
    (batch norm comes back as the identity batch norm around the bias).
    Beside it, `<prefix>.slimnets.json` records the network, the input size
    (when the graph's 'input' has a fixed one) and the classes.

    Returns:
      (checkpoint prefix, the network's `Identity`).
    """
    graph_def = _graph_def(path_or_graph_def)
    direct, layers = frozen_graph_layers(graph_def)
    shapes = {name: list(value.shape) for name, value in direct.items()}
    shapes.update(_pseudo_shapes(layers))
    if not shapes:
        raise CheckpointError('the graph holds no slim MobileNet weights')
    identity, target = target_variables(shapes, num_classes)
    values = {name: value for name, value in direct.items() if name in target}
    values.update(layers_to_variables(layers, target))
    _check_complete(values, target, 'the frozen graph')
    prefix = write_checkpoint(values, output_prefix)
    write_model_info(prefix, identity, _graph_input_size(graph_def),
                     'frozen graph %s' % (
                         os.path.basename(path_or_graph_def) if isinstance(
                             path_or_graph_def, str) else '(a GraphDef)'))
    return prefix, identity


def _graph_input_size(graph_def):
    """The height of a frozen graph's square 'input' placeholder, or None."""
    for node in graph_def.node:
        if node.name == INPUT_NAME and node.op == 'Placeholder':
            dims = [d.size for d in node.attr['shape'].shape.dim]
            if len(dims) == 4 and dims[1] > 0 and dims[1] == dims[2]:
                return int(dims[1])
    return None
