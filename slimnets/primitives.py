"""Helpers shared by the network modules (MobileNet v1, v2, v3, EdgeTPU).

This is the lowest network layer: it imports only TensorFlow, and every
network module takes these helpers from here rather than from one another.
The reference modules keep their private names as aliases
(`mobilenet_v1._fixed_padding`, `conv_blocks._make_divisible`, ...), so code
written against research/slim still finds them.
"""

import functools

import tensorflow.compat.v1 as tf

__all__ = [
    'fixed_padding', 'make_divisible',
    'reduced_kernel_size_for_small_input', 'wrapped_partial',
]


def fixed_padding(inputs, kernel_size, rate=1):
    """Pads H and W so that a 'VALID' convolution behaves like 'SAME'.

    The padding does not depend on the input size, which keeps feature maps
    aligned across resolutions.  For an effective kernel size
    k_eff = k + (k - 1) * (rate - 1), each spatial axis gets
    (k_eff - 1) // 2 pixels before and the rest after; the height follows
    the kernel's height and the width the kernel's width.

    Args:
      inputs: [batch, height, width, channels].
      kernel_size: [kernel_height, kernel_width].
      rate: atrous rate of the convolution that follows.

    Returns:
      [batch, height + kh_eff - 1, width + kw_eff - 1, channels].
    """
    paddings = [[0, 0]]
    for kernel in kernel_size[:2]:
        effective = kernel + (kernel - 1) * (rate - 1)
        before = (effective - 1) // 2
        paddings.append([before, effective - 1 - before])
    paddings.append([0, 0])
    return tf.pad(inputs, paddings)


def make_divisible(v, divisor, min_value=None):
    """Rounds a channel count `v` to the nearest multiple of `divisor`.

    The result is at least `min_value` (default `divisor`) and never more
    than 10% below `v`: if rounding down lost more than that, one more
    `divisor` is added.

    Args:
      v: the unrounded depth, a float or an int.
      divisor: the multiple to round to.
      min_value: the smallest result.

    Returns:
      An int.
    """
    if min_value is None:
        min_value = divisor
    rounded = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * v:
        rounded += divisor
    return int(rounded)


def reduced_kernel_size_for_small_input(input_tensor, kernel_size):
    """Shrinks a pooling kernel to the input's spatial size when it is smaller.

    Args:
      input_tensor: [batch, height, width, channels].
      kernel_size: [kernel_height, kernel_width].

    Returns:
      [min(height, kh), min(width, kw)], or `kernel_size` unchanged when the
      height or width is not known statically.
    """
    shape = input_tensor.get_shape().as_list()
    if shape[1] is None or shape[2] is None:
        return kernel_size
    return [min(shape[1], kernel_size[0]), min(shape[2], kernel_size[1])]


def wrapped_partial(func, *args, **kwargs):
    """`functools.partial` that keeps `func`'s name, docstring and attributes.

    The attributes include `default_image_size`, which the network factory
    reads from the builders made this way (`mobilenet_v1_050`, ...).
    """
    partial_func = functools.partial(func, *args, **kwargs)
    functools.update_wrapper(partial_func, func)
    return partial_func
