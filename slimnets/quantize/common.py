"""Graph-editing helpers shared by the batch-norm folding and the rewrite.

`tf.contrib.graph_editor` is gone; rerouting a tensor's consumers is done
with `Operation._update_input`, which tf.compat.v1 graphs still support.
"""

import tensorflow.compat.v1 as tf

__all__ = [
    'QUANTIZATION_STEP_NAME', 'FAKE_QUANT_TYPES', 'consumer_ops',
    'reroute_tensor', 'create_or_get_quantization_step', 'drop_prefix',
    'context_of',
]

# The step counter that `quant_delay` and `freeze_bn_delay` compare with;
# named as in tf.contrib.quantize so checkpoints carry it under that name.
QUANTIZATION_STEP_NAME = 'fake_quantization_step'

FAKE_QUANT_TYPES = frozenset(['FakeQuantWithMinMaxVars',
                              'FakeQuantWithMinMaxArgs',
                              'FakeQuantWithMinMaxVarsPerChannel'])


def consumer_ops(op):
    """The ops reading any output of `op` (each once, in graph order)."""
    seen = []
    for output in op.outputs:
        for consumer in output.consumers():
            if consumer not in seen:
                seen.append(consumer)
    return seen


def reroute_tensor(new_tensor, old_tensor, can_modify=None):
    """Makes consumers of `old_tensor` read `new_tensor` instead.

    Args:
      new_tensor: the tensor to read from now on.
      old_tensor: the tensor being replaced.
      can_modify: None (every consumer) or the ops that may be rewired.

    Returns:
      the number of inputs rewired.
    """
    allowed = None if can_modify is None else set(can_modify)
    count = 0
    for consumer in list(old_tensor.consumers()):
        if allowed is not None and consumer not in allowed:
            continue
        if consumer is new_tensor.op:
            continue
        for index, tensor in enumerate(consumer.inputs):
            if tensor is old_tensor:
                consumer._update_input(index, new_tensor)  # pylint: disable=protected-access
                count += 1
    return count


def create_or_get_quantization_step():
    """The run counter of the rewritten graph: a variable incremented each
    time the returned int64 scalar is evaluated (once per training step)."""
    graph = tf.get_default_graph()
    tensor_name = QUANTIZATION_STEP_NAME + '/Identity:0'
    try:
        return graph.get_tensor_by_name(tensor_name)
    except KeyError:
        pass
    with graph.name_scope(None):
        step = tf.get_variable(
            QUANTIZATION_STEP_NAME, shape=[], dtype=tf.int64,
            initializer=tf.zeros_initializer(), trainable=False,
            collections=[tf.GraphKeys.GLOBAL_VARIABLES])
        with graph.name_scope(step.op.name + '/'):
            return tf.identity(step.assign_add(1), name='Identity')


def drop_prefix(name, prefix):
    """`name` without `prefix` when it starts with it."""
    return name[len(prefix):] if prefix and name.startswith(prefix) else name


def context_of(name):
    """'a/b/c' -> 'a/b'; 'c' -> ''."""
    return name.rpartition('/')[0]
