"""The generic MobileNet builder behind v2, v3 and EdgeTPU.

A network is described by a *conv def*:

    {'defaults':  {(func, ...): {kwarg: value}},   # arg scopes for every layer
     'overrides': {(func, ...): {kwarg: value}},   # optional, applied after
     'spec':      [op(layer_func, **params), ...]} # the layers, in order

`mobilenet_base` runs the spec: the i-th op (1-based) becomes endpoint
`layer_<i>`, its `multiplier_func` scales its `num_outputs` by the depth
multiplier, and strides turn into atrous rates once `output_stride` is
reached.  Every tensor named '...output' inside a layer's scope becomes an
endpoint too (`layer_15/expansion_output`, `layer_15/depthwise_output`).
`mobilenet` adds the classification head under `Logits/`.
"""

import collections
import contextlib
import copy
import inspect
import os

import tensorflow.compat.v1 as tf

from slimnets import primitives
from slimnets import slim
from slimnets.errors import InputError

__all__ = [
    'apply_activation', 'depth_multiplier', 'op', 'NoOpScope',
    'safe_arg_scope', 'copy_conv_defs', 'mobilenet_base', 'mobilenet',
    'global_pool', 'training_scope',
]

# The reference module's names for the shared primitives.
_fixed_padding = primitives.fixed_padding
_make_divisible = primitives.make_divisible


@slim.add_arg_scope
def apply_activation(x, name=None, activation_fn=None):
    """`activation_fn(x, name=name)`, or `x` when there is no activation."""
    return activation_fn(x, name=name) if activation_fn else x


@contextlib.contextmanager
def _set_arg_scope_defaults(defaults):
    """Enters one nested arg scope per `(funcs, kwargs)` item.

    Args:
      defaults: a dict `{funcs: kwargs}` or a list of `(funcs, kwargs)`
        pairs; `funcs` is a tuple of add_arg_scope functions.
    """
    items = list(defaults.items()) if hasattr(defaults, 'items') else list(
        defaults)
    with contextlib.ExitStack() as stack:
        for funcs, kwargs in items:
            stack.enter_context(slim.arg_scope(funcs, **kwargs))
        yield


@slim.add_arg_scope
def depth_multiplier(output_params,
                     multiplier,
                     divisible_by=8,
                     min_depth=8,
                     **unused_kwargs):
    """Scales `output_params['num_outputs']` in place, made divisible.

    Ops without `num_outputs` (pooling, for example) are left alone.
    """
    if 'num_outputs' not in output_params:
        return
    output_params['num_outputs'] = primitives.make_divisible(
        output_params['num_outputs'] * multiplier, divisible_by, min_depth)


_Op = collections.namedtuple('Op', ['op', 'params', 'multiplier_func'])


def op(opfunc, multiplier_func=depth_multiplier, **params):
    """One layer of a conv def: `opfunc(net, **params)`.

    A `multiplier_transform` entry in `params` replaces `multiplier_func`,
    the function that applies the depth multiplier to the params.
    """
    multiplier = params.pop('multiplier_transform', multiplier_func)
    return _Op(opfunc, params=params, multiplier_func=multiplier)


class NoOpScope(object):
    """A context manager that does nothing."""

    def __enter__(self):
        return None

    def __exit__(self, exc_type, exc_value, traceback):
        return False


def safe_arg_scope(funcs, **kwargs):
    """`slim.arg_scope(funcs, **kwargs)` without the None-valued kwargs.

    Returns a `NoOpScope` when no kwarg is left, so a None never overrides
    a value an outer arg scope set.
    """
    filtered = {name: value for name, value in kwargs.items()
                if value is not None}
    if filtered:
        return slim.arg_scope(funcs, **filtered)
    return NoOpScope()


@contextlib.contextmanager
def _scope_all(scope, default_scope=None):
    """A variable scope and its original name scope, entered together."""
    with tf.variable_scope(scope, default_name=default_scope) as variable_scope:
        with tf.name_scope(variable_scope.original_name_scope):
            yield variable_scope


def _takes_argument(function, name):
    """Whether `function` (a layer function or partial) accepts kwarg `name`."""
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters


def _place_explicit_padding(opdef, params, net, layer_rate):
    """Applies `use_explicit_padding` to one op; returns the op's input.

    An op that pads for itself (it takes `use_explicit_padding`, like
    `expanded_conv`) is told to; otherwise an op with a `kernel_size` gets
    its input padded here.  The reference padded before `expanded_conv`
    whenever the spec named a kernel size (v3), and then the block padded
    again with 'SAME'; and it passed the flag to ops that reject it
    (`reduce_to_1x1`).
    """
    if _takes_argument(opdef.op, 'use_explicit_padding'):
        params['use_explicit_padding'] = True
    elif 'kernel_size' in params:
        net = primitives.fixed_padding(net, params['kernel_size'],
                                       layer_rate)
    return net


def copy_conv_defs(conv_defs):
    """A copy of a conv def whose params can be changed without side effects.

    Every op's `params` and every `defaults`/`overrides` kwargs dict is new;
    the layer functions themselves are shared (unlike `copy.deepcopy`, which
    would also copy the partials in the spec).
    """
    copied = dict(conv_defs)
    copied['spec'] = [_Op(o.op, copy.deepcopy(o.params), o.multiplier_func)
                      for o in conv_defs['spec']]
    for key in ('defaults', 'overrides'):
        if key in conv_defs:
            copied[key] = {funcs: dict(kwargs)
                           for funcs, kwargs in conv_defs[key].items()}
    return copied


@slim.add_arg_scope
def mobilenet_base(inputs,
                   conv_defs,
                   multiplier=1.0,
                   final_endpoint=None,
                   output_stride=None,
                   use_explicit_padding=False,
                   scope=None,
                   is_training=False):
    """Builds the layers of `conv_defs['spec']` (see the module docstring).

    Args:
      inputs: [N, H, W, C] images.
      conv_defs: the conv def (defaults, optional overrides, spec).
      multiplier: depth multiplier passed to every op's `multiplier_func`.
      final_endpoint: 'layer_<i>' to stop after; None builds every op.
      output_stride: None, 1 or an even number: once the accumulated stride
        reaches it, later ops keep stride 1 and get an atrous `rate`
        (except 1x1 convolutions).
      use_explicit_padding: pad with `primitives.fixed_padding` and
        convolve 'VALID'.
      scope: variable scope; default 'Mobilenet'.
      is_training: sets batch norm's `is_training` (when not None).

    Returns:
      (net, end_points): the last op's output and a dict of endpoints.

    Raises:
      ValueError: multiplier <= 0 or an invalid output_stride.
    """
    if multiplier <= 0:
        raise InputError('multiplier is not greater than zero (got %r).'
                         % (multiplier,))
    if output_stride is not None and (
            output_stride == 0 or (output_stride > 1 and output_stride % 2)):
        raise InputError('Output stride must be None, 1 or a multiple of 2 '
                         '(got %r).' % (output_stride,))
    defaults = conv_defs.get('defaults', {})
    overrides = dict(conv_defs.get('overrides', {}))
    if use_explicit_padding:
        overrides[(slim.conv2d, slim.separable_conv2d)] = {'padding': 'VALID'}

    with _scope_all(scope, default_scope='Mobilenet'), \
            safe_arg_scope([slim.batch_norm], is_training=is_training), \
            _set_arg_scope_defaults(defaults), \
            _set_arg_scope_defaults(overrides):
        current_stride = 1
        rate = 1
        net = inputs
        end_points = {}
        layer_of_scope = {}
        for index, opdef in enumerate(conv_defs['spec']):
            params = dict(opdef.params)
            opdef.multiplier_func(params, multiplier)
            stride = params.get('stride', 1)
            if output_stride is not None and current_stride == output_stride:
                layer_stride, layer_rate = 1, rate
                rate *= stride
            else:
                layer_stride, layer_rate = stride, 1
                current_stride *= stride
            params['stride'] = layer_stride
            if layer_rate > 1 and tuple(params.get('kernel_size', ())) != (1, 1):
                params['rate'] = layer_rate
            if use_explicit_padding:
                net = _place_explicit_padding(opdef, params, net, layer_rate)

            end_point = 'layer_%d' % (index + 1)
            net = opdef.op(net, **params)
            end_points[end_point] = net
            layer_of_scope[os.path.dirname(net.name)] = end_point
            if final_endpoint is not None and end_point == final_endpoint:
                break

        for graph_op in net.graph.get_operations():
            op_scope, op_name = os.path.split(graph_op.name)
            if op_scope in layer_of_scope and graph_op.name.endswith('output'):
                end_points[layer_of_scope[op_scope] + '/' + op_name] = \
                    graph_op.outputs[0]
        return net, end_points


@slim.add_arg_scope
def mobilenet(inputs,
              num_classes=1001,
              prediction_fn=slim.softmax,
              reuse=None,
              scope='Mobilenet',
              base_only=False,
              use_reduce_mean_for_pooling=False,
              **mobilenet_args):
    """A MobileNet classifier: `mobilenet_base` plus a pooled 1x1-conv head.

    Args:
      inputs: [N, H, W, 3] images.
      num_classes: classes of the logits; 0 or None returns the pooled
        features [N, 1, 1, C] ('global_pool').
      prediction_fn: applied to the logits for endpoint 'Predictions'.
      reuse: reuse the variables of an existing network.
      scope: variable scope.
      base_only: return the base's output and endpoints, no head.
      use_reduce_mean_for_pooling: pool with ReduceMean instead of AvgPool.
      **mobilenet_args: passed to `mobilenet_base` (conv_defs, multiplier,
        output_stride, is_training, ...).

    Returns:
      (logits [N, num_classes], end_points).

    Raises:
      ValueError: the input is not of rank 4.
    """
    is_training = mobilenet_args.get('is_training', False)
    input_shape = inputs.get_shape().as_list()
    if len(input_shape) != 4:
        raise InputError('Expected rank 4 input, was: %d (images must be '
                         '[batch, height, width, channels]).' % len(input_shape))

    with tf.variable_scope(scope, 'Mobilenet', reuse=reuse) as variable_scope:
        inputs = tf.identity(inputs, 'input')
        net, end_points = mobilenet_base(inputs, scope=variable_scope,
                                         **mobilenet_args)
        if base_only:
            return net, end_points
        net = tf.identity(net, name='embedding')
        with tf.variable_scope('Logits'):
            net = global_pool(net, use_reduce_mean_for_pooling)
            end_points['global_pool'] = net
            if not num_classes:
                return net, end_points
            net = slim.dropout(net, scope='Dropout', is_training=is_training)
            logits = slim.conv2d(net, num_classes, [1, 1], activation_fn=None,
                                 normalizer_fn=None,
                                 biases_initializer=tf.zeros_initializer(),
                                 scope='Conv2d_1c_1x1')
            logits = tf.squeeze(logits, [1, 2])
            logits = tf.identity(logits, name='output')
        end_points['Logits'] = logits
        if prediction_fn:
            end_points['Predictions'] = prediction_fn(logits, 'Predictions')
    return logits, end_points


def global_pool(input_tensor, use_reduce_mean_for_pooling=False,
                pool_op=tf.nn.avg_pool2d):
    """Averages [N, H, W, C] over H and W into [N, 1, 1, C].

    With `use_reduce_mean_for_pooling`, or when H or W is unknown at graph
    construction, the average is a ReduceMean; otherwise `pool_op` with a
    full-size 'VALID' window (the op published graphs contain).
    """
    shape = input_tensor.get_shape().as_list()
    if use_reduce_mean_for_pooling:
        return tf.reduce_mean(input_tensor, [1, 2], keepdims=True,
                              name='ReduceMean')
    if shape[1] is None or shape[2] is None:
        output = tf.reduce_mean(input_tensor, [1, 2], keepdims=True,
                                name='AvgPool')
    else:
        output = pool_op(input_tensor, ksize=[1, shape[1], shape[2], 1],
                         strides=[1, 1, 1, 1], padding='VALID')
    output.set_shape([None, 1, 1, None])
    return output


def training_scope(is_training=True,
                   weight_decay=0.00004,
                   stddev=0.09,
                   dropout_keep_prob=0.8,
                   bn_decay=0.997):
    """The arg scope MobileNet v2/v3 were trained with.

    Convolutions and fully connected layers get truncated-normal(stddev)
    weights (Xavier when `stddev < 0`) and batch norm; conv2d gets an L2
    penalty, separable_conv2d none; `mobilenet_base`/`mobilenet`, batch norm
    and dropout get `is_training`, batch norm `decay`, dropout `keep_prob`,
    each only when not None.

    Returns:
      An arg_scope dict.
    """
    if stddev < 0:
        weights_initializer = slim.xavier_initializer()
    else:
        weights_initializer = tf.truncated_normal_initializer(stddev=stddev)
    with slim.arg_scope([slim.conv2d, slim.fully_connected,
                         slim.separable_conv2d],
                        weights_initializer=weights_initializer,
                        normalizer_fn=slim.batch_norm), \
            slim.arg_scope([mobilenet_base, mobilenet],
                           is_training=is_training), \
            safe_arg_scope([slim.batch_norm], decay=bn_decay,
                           is_training=is_training), \
            safe_arg_scope([slim.dropout], is_training=is_training,
                           keep_prob=dropout_keep_prob), \
            slim.arg_scope([slim.conv2d],
                           weights_regularizer=slim.l2_regularizer(
                               weight_decay)), \
            slim.arg_scope([slim.separable_conv2d],
                           weights_regularizer=None) as scope:
        return scope
