"""Building blocks of MobileNet v2/v3: the inverted residual and its parts.

`expanded_conv` is the block of both networks:

    input [N, H, W, C]
      -> expand: 1x1 conv to E channels (only when E > C)     'expand'
      -> depthwise: k x k, stride s, rate r                   'depthwise'
      -> optional transform (squeeze-excite in v3)
      -> project: 1x1 conv to num_outputs, linear             'project'
      -> + input when stride 1 and depths match
    output [N, H/s, W/s, num_outputs]

Every function here is an `add_arg_scope` function of `slimnets.slim`, so
arg scopes written for the reference (`expanded_conv`, `squeeze_excite`,
`split_separable_conv2d`) keep applying.
"""

import contextlib
import functools

import tensorflow.compat.v1 as tf

from slimnets import primitives
from slimnets import slim
from slimnets.errors import ArgumentTypeError
from slimnets.errors import InputError

__all__ = [
    'split_separable_conv2d', 'expand_input_by_factor', 'split_conv',
    'expanded_conv', 'squeeze_excite',
]

# The reference module's names for the shared primitives.
_fixed_padding = primitives.fixed_padding
_make_divisible = primitives.make_divisible


def _split_divisible(num, num_ways, divisible_by=8):
    """Splits `num` into `num_ways` parts, each a multiple of `divisible_by`.

    Returns:
      A list of `num_ways` ints summing to `num`, as even as possible.

    Raises:
      ValueError: `num` is not a multiple of `divisible_by`, or the parts
        would be smaller than `divisible_by`.
    """
    if num % divisible_by:
        raise InputError('%d is not divisible by %d.' % (num, divisible_by))
    if num / num_ways < divisible_by:
        raise InputError('%d cannot be split %d ways into parts of at least '
                         '%d.' % (num, num_ways, divisible_by))
    base = num // num_ways // divisible_by * divisible_by
    parts = []
    accumulated = 0
    for index in range(num_ways):
        part = base
        while accumulated + part < num * (index + 1) / num_ways:
            part += divisible_by
        parts.append(part)
        accumulated += part
    return parts


@contextlib.contextmanager
def _v1_compatible_scope_naming(scope):
    """Yields the prefix for '<prefix>depthwise' / '<prefix>pointwise' scopes.

    With no scope, a unique 'separable' variable scope is opened and the
    prefix is empty; otherwise the prefix is '<scope>_' as in MobileNet v1.
    """
    if scope is None:
        with tf.variable_scope(None, default_name='separable') as variable_scope:
            with tf.name_scope(variable_scope.original_name_scope):
                yield ''
    else:
        yield scope + '_'


@slim.add_arg_scope
def split_separable_conv2d(input_tensor,
                           num_outputs,
                           scope=None,
                           normalizer_fn=None,
                           stride=1,
                           rate=1,
                           endpoints=None,
                           use_explicit_padding=False):
    """A 3x3 depthwise conv then a 1x1 pointwise conv, as two layers.

    Unlike `slim.separable_conv2d` with `num_outputs`, each half gets its own
    scope (`<scope>_depthwise`, `<scope>_pointwise`) and normalizer, the
    layout of MobileNet v1 checkpoints.

    Args:
      input_tensor: [N, H, W, C].
      num_outputs: channels of the pointwise conv.
      scope: prefix of the two scopes; None opens a unique 'separable' scope.
      normalizer_fn: normalizer of both halves.
      stride, rate: of the depthwise conv.
      endpoints: optional dict that receives both halves' outputs.
      use_explicit_padding: pad with `primitives.fixed_padding` and
        convolve 'VALID'.

    Returns:
      [N, H / stride, W / stride, num_outputs].
    """
    with _v1_compatible_scope_naming(scope) as prefix:
        endpoints = endpoints if endpoints is not None else {}
        kernel_size = [3, 3]
        padding = 'SAME'
        if use_explicit_padding:
            padding = 'VALID'
            input_tensor = primitives.fixed_padding(input_tensor,
                                                    kernel_size, rate)
        depthwise_scope = prefix + 'depthwise'
        net = slim.separable_conv2d(
            input_tensor, None, kernel_size, depth_multiplier=1, stride=stride,
            rate=rate, normalizer_fn=normalizer_fn, padding=padding,
            scope=depthwise_scope)
        endpoints[depthwise_scope] = net
        pointwise_scope = prefix + 'pointwise'
        net = slim.conv2d(net, num_outputs, [1, 1], stride=1,
                          normalizer_fn=normalizer_fn, scope=pointwise_scope)
        endpoints[pointwise_scope] = net
    return net


def expand_input_by_factor(n, divisible_by=8):
    """An `expansion_size` callable: `n` times the input depth, made divisible."""
    return lambda num_inputs, **_: primitives.make_divisible(
        num_inputs * n, divisible_by)


def split_conv(input_tensor,
               num_outputs,
               num_ways,
               scope,
               divisible_by=8,
               **kwargs):
    """A 1x1 convolution, optionally split into `num_ways` grouped parts.

    When both the input depth and `num_outputs` allow parts of at least
    `divisible_by` channels, the input is split along channels, each part
    convolved in scope `<scope>_part_<i>`, and the results concatenated;
    otherwise this is one `slim.conv2d` in `scope`.

    Returns:
      [N, H, W, num_outputs].
    """
    input_depth = input_tensor.get_shape().as_list()[3]
    if num_ways == 1 or min(input_depth // num_ways,
                            num_outputs // num_ways) < divisible_by:
        return slim.conv2d(input_tensor, num_outputs, [1, 1], scope=scope,
                           **kwargs)
    input_splits = _split_divisible(input_depth, num_ways, divisible_by)
    output_splits = _split_divisible(num_outputs, num_ways, divisible_by)
    parts = tf.split(input_tensor, input_splits, axis=3, name='split_' + scope)
    outputs = []
    part_scope = scope
    for index, (part, depth) in enumerate(zip(parts, output_splits)):
        part_scope = '%s_part_%d' % (scope, index)
        net = slim.conv2d(part, depth, [1, 1], scope=part_scope, **kwargs)
        outputs.append(tf.identity(net, part_scope + '_output'))
    return tf.concat(outputs, 3, name=part_scope + '_concat')


def _expansion_kernel_size(expansion_fn):
    """The kernel size a `functools.partial` expansion conv was given, if any.

    MobileNet EdgeTPU's fused blocks expand with a k x k convolution
    (`functools.partial(slim.conv2d, kernel_size=k, ...)`); with explicit
    padding that convolution needs its input padded like any other.
    """
    kernel = getattr(expansion_fn, 'keywords', {}).get('kernel_size')
    if kernel is None:
        return None
    return [kernel, kernel] if isinstance(kernel, int) else list(kernel)


@slim.add_arg_scope
def expanded_conv(input_tensor,
                  num_outputs,
                  expansion_size=expand_input_by_factor(6),
                  stride=1,
                  rate=1,
                  kernel_size=(3, 3),
                  residual=True,
                  normalizer_fn=None,
                  split_projection=1,
                  split_expansion=1,
                  split_divisible_by=8,
                  expansion_transform=None,
                  depthwise_location='expansion',
                  depthwise_channel_multiplier=1,
                  endpoints=None,
                  use_explicit_padding=False,
                  padding='SAME',
                  inner_activation_fn=None,
                  depthwise_activation_fn=None,
                  project_activation_fn=tf.identity,
                  depthwise_fn=slim.separable_conv2d,
                  expansion_fn=split_conv,
                  projection_fn=split_conv,
                  scope=None):
    """The inverted-residual block of MobileNet v2 and v3 (see module doc).

    Args:
      input_tensor: [N, H, W, C].
      num_outputs: channels after the projection.
      expansion_size: channels of the expansion, or a callable
        `f(num_inputs=C)` giving them; no expansion when not above C.
      stride, rate, kernel_size: of the depthwise convolution.
      residual: add the input when stride is 1 and depths match; a callable
        `residual(input_tensor=, output_tensor=)` replaces the addition.
      normalizer_fn: normalizer of every convolution in the block.
      split_projection, split_expansion, split_divisible_by: grouped 1x1
        convolutions (see `split_conv`).
      expansion_transform: callable `(expansion_tensor=, input_tensor=)`
        applied after the depthwise conv (squeeze-excite in v3).
      depthwise_location: 'expansion' (default), 'input', 'output' or None.
      depthwise_channel_multiplier: channel multiplier of the depthwise conv.
      endpoints: optional dict receiving 'expansion_output',
        'depthwise_output' and 'projection_output'.
      use_explicit_padding: pad with `primitives.fixed_padding` and
        convolve 'VALID'; requires `padding='SAME'`.
      padding: padding of the depthwise conv.
      inner_activation_fn: activation of the expansion and depthwise convs.
      depthwise_activation_fn: activation of the depthwise conv only.
      project_activation_fn: activation of the projection (linear).
      depthwise_fn, expansion_fn, projection_fn: the layer functions.
      scope: variable scope; default a unique 'expanded_conv'.

    Returns:
      [N, H / stride, W / stride, num_outputs], an identity op named 'output'.

    Raises:
      TypeError: unknown `depthwise_location`, or explicit padding with a
        padding other than 'SAME'.
    """
    conv_defaults = {}
    depthwise_defaults = {}
    if inner_activation_fn is not None:
        conv_defaults['activation_fn'] = inner_activation_fn
        depthwise_defaults['activation_fn'] = inner_activation_fn
    if depthwise_activation_fn is not None:
        depthwise_defaults['activation_fn'] = depthwise_activation_fn
    with tf.variable_scope(scope, default_name='expanded_conv') as block_scope, \
            tf.name_scope(block_scope.original_name_scope), \
            slim.arg_scope((slim.conv2d,), **conv_defaults), \
            slim.arg_scope((slim.separable_conv2d,), **depthwise_defaults):
        input_depth = input_tensor.get_shape().as_list()[3]
        if depthwise_location not in (None, 'input', 'output', 'expansion'):
            raise ArgumentTypeError(
                '%r is unknown value for depthwise_location; use None, '
                "'input', 'output' or 'expansion'." % (depthwise_location,))
        if use_explicit_padding:
            if padding != 'SAME':
                raise ArgumentTypeError(
                    '`use_explicit_padding` should only be used with "SAME" '
                    'padding (got %r).' % (padding,))
            padding = 'VALID'
        depthwise = functools.partial(
            depthwise_fn, num_outputs=None, kernel_size=kernel_size,
            depth_multiplier=depthwise_channel_multiplier, stride=stride,
            rate=rate, normalizer_fn=normalizer_fn, padding=padding,
            scope='depthwise')

        def depthwise_step(net, **kwargs):
            if use_explicit_padding:
                net = primitives.fixed_padding(net, kernel_size, rate)
            net = tf.identity(depthwise(net, **kwargs), name='depthwise_output')
            if endpoints is not None:
                endpoints['depthwise_output'] = net
            return net

        input_tensor = tf.identity(input_tensor, 'input')
        net = input_tensor
        if depthwise_location == 'input':
            net = depthwise_step(net, activation_fn=None)

        inner_size = (expansion_size(num_inputs=input_depth)
                      if callable(expansion_size) else expansion_size)
        if inner_size > net.shape[3]:
            expand = expansion_fn
            if expansion_fn == split_conv:
                expand = functools.partial(split_conv, num_ways=split_expansion,
                                           divisible_by=split_divisible_by,
                                           stride=1)
            expansion_kernel = _expansion_kernel_size(expansion_fn)
            if use_explicit_padding and expansion_kernel:
                net = primitives.fixed_padding(net, expansion_kernel)
            net = expand(net, inner_size, scope='expand',
                         normalizer_fn=normalizer_fn)
            net = tf.identity(net, 'expansion_output')
            if endpoints is not None:
                endpoints['expansion_output'] = net

        if depthwise_location == 'expansion':
            net = depthwise_step(net)
        if expansion_transform:
            net = expansion_transform(expansion_tensor=net,
                                      input_tensor=input_tensor)

        project = projection_fn
        if projection_fn == split_conv:
            project = functools.partial(split_conv, num_ways=split_projection,
                                        divisible_by=split_divisible_by,
                                        stride=1)
        net = project(net, num_outputs, scope='project',
                      normalizer_fn=normalizer_fn,
                      activation_fn=project_activation_fn)
        if endpoints is not None:
            endpoints['projection_output'] = net
        if depthwise_location == 'output':
            net = depthwise_step(net, activation_fn=None)

        if callable(residual):
            net = residual(input_tensor=input_tensor, output_tensor=net)
        elif (residual and stride == 1 and
              net.get_shape().as_list()[3] ==
              input_tensor.get_shape().as_list()[3]):
            net += input_tensor
        return tf.identity(net, name='output')


@slim.add_arg_scope
def squeeze_excite(input_tensor,
                   divisible_by=8,
                   squeeze_factor=3,
                   inner_activation_fn=tf.nn.relu,
                   gating_fn=tf.sigmoid,
                   squeeze_input_tensor=None,
                   pool=None):
    """Squeeze-and-excitation: channel gates computed from pooled features.

    Pools `squeeze_input_tensor` (default `input_tensor`) over space, squeezes
    it with a 1x1 conv ('Conv', C / squeeze_factor channels made divisible,
    `inner_activation_fn`), expands back ('Conv_1', `gating_fn`) and
    multiplies `input_tensor` by the gates.  Both convolutions have biases
    and no normalizer.  `pool` pools in windows of that size instead and
    resizes the gates back.

    Args:
      input_tensor: [N, H, W, C].

    Returns:
      [N, H, W, C], in variable scope 'squeeze_excite'.
    """
    with tf.variable_scope('squeeze_excite'):
        if squeeze_input_tensor is None:
            squeeze_input_tensor = input_tensor
        input_size = input_tensor.shape.as_list()[1:3]
        pool_height, pool_width = squeeze_input_tensor.shape.as_list()[1:3]
        stride = 1
        if pool is not None and pool_height is not None and pool_height >= pool:
            pool_height, pool_width, stride = pool, pool, pool
        input_channels = squeeze_input_tensor.shape.as_list()[3]
        output_channels = input_tensor.shape.as_list()[3]
        squeeze_channels = primitives.make_divisible(
            input_channels / squeeze_factor, divisor=divisible_by)
        if pool_height is None or pool_width is None:
            # Unknown spatial size: the global average, as a full-size pool.
            pooled = tf.reduce_mean(squeeze_input_tensor, [1, 2], keepdims=True)
        else:
            pooled = tf.nn.avg_pool(squeeze_input_tensor,
                                    (1, pool_height, pool_width, 1),
                                    strides=(1, stride, stride, 1),
                                    padding='VALID')
        squeeze = slim.conv2d(pooled, kernel_size=(1, 1),
                              num_outputs=squeeze_channels, normalizer_fn=None,
                              activation_fn=inner_activation_fn)
        excite = slim.conv2d(squeeze, num_outputs=output_channels,
                             kernel_size=[1, 1], normalizer_fn=None,
                             activation_fn=gating_fn)
        if pool is not None:
            excite = tf.image.resize_images(excite, input_size,
                                            align_corners=True)
        return input_tensor * excite
