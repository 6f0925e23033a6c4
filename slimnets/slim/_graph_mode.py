"""Guards that keep slim layer functions in TF1 graph mode.

Slim layers create `tf.compat.v1` variables and collections, which only exist
in a graph.  In a TF2 process eager execution is on by default, so calling a
layer outside a graph would either fail deep inside TensorFlow or silently
create eager variables that no Saver can see.  The guard turns that into an
error that says what to do instead.
"""

import functools
import warnings

import tensorflow.compat.v1 as tf

from slimnets.errors import SlimnetsError

__all__ = [
    'GRAPH_MODE_HINT', 'EagerExecutionError', 'ensure_graph_mode',
    'graph_only',
]

GRAPH_MODE_HINT = (
    'Build slim networks in graph mode: wrap the code in '
    '`with tf.Graph().as_default():` (and run it in a `tf.compat.v1.Session`), '
    'or trace it with `tf.compat.v1.wrap_function`.')


class EagerExecutionError(SlimnetsError, RuntimeError):
    """A graph-only slim function was called while executing eagerly."""


def ensure_graph_mode(function_name):
    """Raises `EagerExecutionError` if TensorFlow is executing eagerly."""
    if tf.executing_eagerly():
        raise EagerExecutionError(
            '%s builds TF1 graph ops and cannot run eagerly. %s'
            % (function_name, GRAPH_MODE_HINT))


def graph_only(function, public_name=None):
    """Wraps a tf_slim function so that it refuses to run eagerly.

    The wrapper keeps the wrapped function's arg-scope key (`_key_op`), so
    `arg_scope([wrapper], ...)` and `arg_scope([function], ...)` configure
    the same thing.  The wrapper is not itself decorated with
    `add_arg_scope`: the wrapped function already merges the arg scope.
    """
    if isinstance(function, functools.partial):
        # tf_slim's `relu`, `relu6` and `linear` are partials of
        # fully_connected; `stack`/`repeat` name their scopes after
        # `layer.func.__name__`, so stay a partial of the guarded function.
        return functools.partial(
            graph_only(function.func, public_name), *function.args,
            **function.keywords)
    name = public_name or 'slimnets.slim.%s' % getattr(
        function, '__name__', 'layer')

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        ensure_graph_mode(name)
        with warnings.catch_warnings():
            # tf_slim builds on TensorFlow's frozen copy of the TF1 Keras
            # layers, which warn about their own deprecation on every call:
            # noise the user cannot act on.
            warnings.filterwarnings('ignore', category=UserWarning,
                                    module=r'tensorflow\.python\.keras')
            return function(*args, **kwargs)

    if hasattr(function, '_key_op'):
        wrapper._key_op = function._key_op  # pylint: disable=protected-access
    return wrapper
