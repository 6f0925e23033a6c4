"""The inference graph: frozen, training-only ops gone, batch norm folded.

`fold_batch_norms` rewrites every inference-mode `FusedBatchNorm*` that
follows a `Conv2D` or `DepthwiseConv2dNative` with constant weights into
scaled weights and a `BiasAdd`:

    w' = w * gamma / sqrt(variance + epsilon)
    b' = beta - mean * gamma / sqrt(variance + epsilon)

so a slim block `conv -> batch norm -> relu6` becomes `conv -> bias ->
relu6`, the pattern TensorFlow's CPU kernels fuse into one op.
`fold_scalar_multiplies` then moves constant scalings in front of a
convolution (hard-swish's `* 1/6`) into its weights.

`frozen_inference_graph(...)` builds a network, restores a checkpoint and
returns the folded GraphDef with input 'input' and outputs 'logits' and
'probabilities'; `slimnets.runtimes` runs such a GraphDef (the
'tensorflow' runtime rewrites it further for TensorFlow's CPU kernels).
"""

import collections

import numpy as np
import tensorflow.compat.v1 as tf

# The non-deprecated freezing entry point (tf.compat.v1.graph_util's is a
# deprecated alias of it).
from tensorflow.python.framework import convert_to_constants  # pylint: disable=g-direct-tensorflow-import
from tensorflow.python.util import deprecation  # pylint: disable=g-direct-tensorflow-import

from slimnets import checkpoints
from slimnets import nets_factory
from slimnets.graph_format import INPUT_NAME
from slimnets.graph_format import INPUT_SCALE_ATTR
from slimnets.graph_format import OUTPUT_NAMES

__all__ = [
    'BATCH_NORMS', 'CONVOLUTIONS', 'FLOAT', 'INT32', 'FoldReport',
    'producer_of', 'empty_like', 'consumers_of', 'const_node',
    'fold_batch_norms', 'fold_scalar_multiplies', 'prune',
    'optimize_for_inference', 'freeze_session', 'build_inference_network',
    'frozen_inference_graph',
]

BATCH_NORMS = ('FusedBatchNorm', 'FusedBatchNormV2', 'FusedBatchNormV3')
CONVOLUTIONS = ('Conv2D', 'DepthwiseConv2dNative')

FLOAT = tf.float32.as_datatype_enum
INT32 = tf.int32.as_datatype_enum

FoldReport = collections.namedtuple('FoldReport', ['folded', 'left'])


def producer_of(name):
    """'node:0' or '^node' -> 'node'."""
    return name.lstrip('^').split(':')[0]


def _constant_through_identities(nodes, name):
    """The Const node behind `name`, following Identity ops, or None."""
    node = nodes.get(producer_of(name))
    while node is not None and node.op == 'Identity':
        node = nodes.get(producer_of(node.input[0]))
    return node if node is not None and node.op == 'Const' else None


def empty_like(graph_def):
    """A GraphDef with `graph_def`'s versions and function library only."""
    output = tf.GraphDef()
    output.versions.CopyFrom(graph_def.versions)
    output.library.CopyFrom(graph_def.library)
    return output


def consumers_of(graph_def):
    counts = collections.Counter()
    for node in graph_def.node:
        for name in node.input:
            counts[producer_of(name)] += 1
    return counts


def const_node(name, value):
    node = tf.NodeDef()
    node.name = name
    node.op = 'Const'
    node.attr['dtype'].type = tf.as_dtype(value.dtype).as_datatype_enum
    node.attr['value'].tensor.CopyFrom(tf.make_tensor_proto(value))
    return node


def fold_batch_norms(graph_def):
    """Folds inference batch norms into the convolutions before them.

    Args:
      graph_def: a frozen GraphDef (weights and statistics are Consts).

    Returns:
      (new GraphDef, FoldReport(folded=count, left=names of batch norms
      that could not be folded)).
    """
    nodes = {node.name: node for node in graph_def.node}
    consumers = consumers_of(graph_def)
    replaced = {}      # batch-norm name -> BiasAdd NodeDef
    new_weights = {}   # convolution name -> Const NodeDef
    left = []
    for node in graph_def.node:
        if node.op not in BATCH_NORMS:
            continue
        if node.attr['is_training'].b:
            left.append(node.name)
            continue
        conv = nodes.get(producer_of(node.input[0]))
        params = [_constant_through_identities(nodes, n) for n in node.input[1:5]]
        weights = conv is not None and conv.op in CONVOLUTIONS and \
            _constant_through_identities(nodes, conv.input[1])
        if not weights or None in params or consumers[conv.name] != 1 or \
                node.attr['data_format'].s not in (b'NHWC', b''):
            left.append(node.name)
            continue
        gamma, beta, mean, variance = [tf.make_ndarray(p.attr['value'].tensor)
                                       for p in params]
        kernel = tf.make_ndarray(weights.attr['value'].tensor)
        scale = gamma / np.sqrt(variance + node.attr['epsilon'].f)
        if conv.op == 'Conv2D':
            folded_kernel = kernel * scale
        else:  # depthwise [kh, kw, in, multiplier]: channel = in * mult + m
            folded_kernel = kernel * scale.reshape(kernel.shape[2:])
        bias = beta - mean * scale
        new_weights[conv.name] = const_node(conv.name + '/folded_weights',
                                            folded_kernel.astype(kernel.dtype))
        bias_node = tf.NodeDef()
        bias_node.name = node.name
        bias_node.op = 'BiasAdd'
        bias_node.input.extend([node.input[0], node.name + '/folded_bias'])
        bias_node.attr['T'].CopyFrom(node.attr['T'])
        bias_node.attr['data_format'].s = b'NHWC'
        replaced[node.name] = (bias_node, const_node(
            node.name + '/folded_bias', bias.astype(kernel.dtype)))

    output = empty_like(graph_def)
    for node in graph_def.node:
        if node.name in replaced:
            bias_node, bias_const = replaced[node.name]
            output.node.extend([bias_const, bias_node])
            continue
        copy = output.node.add()
        copy.CopyFrom(node)
        if node.name in new_weights:
            output.node.extend([new_weights[node.name]])
            copy.input[1] = new_weights[node.name].name
    return output, FoldReport(len(replaced), left)


def fold_scalar_multiplies(graph_def):
    """Moves `y = x * c` (c a scalar Const) into the convolutions reading y.

    conv(x * c, w) == conv(x, w * c), zero padding included, so when every
    consumer of the Mul is a convolution with constant weights of its own,
    the Mul (a pass over a whole feature map) disappears.  Hard-swish
    (`x * relu6(x + 3) * (1/6)`) before a convolution is the case that
    matters: MobileNet v3 has one per block.

    Returns:
      (new GraphDef, number of multiplies folded).
    """
    nodes = {node.name: node for node in graph_def.node}
    consumers = collections.defaultdict(list)
    for node in graph_def.node:
        for index, name in enumerate(node.input):
            consumers[producer_of(name)].append((node, index))
    weight_users = collections.Counter(
        producer_of(node.input[1]) for node in graph_def.node
        if node.op in CONVOLUTIONS)
    rewired = {}   # convolution name -> new input 0
    scaled = {}    # weight Const name -> factor
    removed = set()
    for node in graph_def.node:
        if node.op != 'Mul' or len(node.input) != 2:
            continue
        scalar = [i for i, name in enumerate(node.input)
                  if (nodes.get(producer_of(name)) is not None and
                      nodes[producer_of(name)].op == 'Const' and
                      tf.make_ndarray(nodes[producer_of(name)].attr['value']
                                      .tensor).size == 1)]
        users = consumers[node.name]
        if len(scalar) != 1 or not users or any(
                user.op not in CONVOLUTIONS or index != 0 or
                nodes.get(producer_of(user.input[1])) is None or
                nodes[producer_of(user.input[1])].op != 'Const' or
                weight_users[producer_of(user.input[1])] != 1 or
                user.name in rewired
                for user, index in users):
            continue
        factor = float(tf.make_ndarray(
            nodes[producer_of(node.input[scalar[0]])].attr['value'].tensor))
        for user, _ in users:
            rewired[user.name] = node.input[1 - scalar[0]]
            scaled[producer_of(user.input[1])] = factor
        removed.add(node.name)
    output = empty_like(graph_def)
    for node in graph_def.node:
        if node.name in removed:
            continue
        copy = output.node.add()
        copy.CopyFrom(node)
        if node.name in rewired:
            copy.input[0] = rewired[node.name]
            # Recorded so that the weights can be read back unscaled
            # (checkpoints.converters); '_' attributes are TF-internal.
            copy.attr[INPUT_SCALE_ATTR].f = scaled[producer_of(node.input[1])]
        if node.name in scaled:
            value = tf.make_ndarray(node.attr['value'].tensor)
            copy.attr['value'].tensor.CopyFrom(tf.make_tensor_proto(
                (value * scaled[node.name]).astype(value.dtype)))
    return output, len(removed)


def _bypass_identities(graph_def, protected):
    """Rewires consumers of Identity ops to the Identity's input."""
    identities = {node.name: node.input[0] for node in graph_def.node
                  if node.op == 'Identity' and node.name not in protected
                  and len(node.input) == 1}

    def source(name):
        control = name.startswith('^')
        producer = producer_of(name)
        while producer in identities:
            name = identities[producer]
            producer = producer_of(name)
        return '^' + producer if control else name

    output = empty_like(graph_def)
    for node in graph_def.node:
        if node.name in identities:
            continue
        copy = output.node.add()
        copy.CopyFrom(node)
        del copy.input[:]
        copy.input.extend(source(name) for name in node.input)
    return output


def prune(graph_def, output_names):
    """Keeps only the nodes the outputs depend on."""
    nodes = {node.name: node for node in graph_def.node}
    needed, stack = set(), list(output_names)
    while stack:
        name = stack.pop()
        if name in needed:
            continue
        needed.add(name)
        stack.extend(producer_of(i) for i in nodes[name].input)
    output = empty_like(graph_def)
    output.node.extend(n for n in graph_def.node if n.name in needed)
    return output


def optimize_for_inference(graph_def, output_names=OUTPUT_NAMES):
    """Bypasses Identity ops, folds batch norms, drops every node the
    outputs do not need (savers, initializers, training-only ops)."""
    protected = set(output_names) | {INPUT_NAME}
    stripped = _bypass_identities(prune(graph_def, output_names), protected)
    folded, report = fold_batch_norms(stripped)
    folded, _ = fold_scalar_multiplies(folded)
    return prune(folded, output_names), report


def freeze_session(sess, output_names=OUTPUT_NAMES):
    """The session's graph with variables replaced by their values."""
    # Freezing calls TF1 helpers that log a deprecation notice on every
    # call; `classify` freezes each time, and users should not see it.
    with deprecation.silence():
        return convert_to_constants.convert_variables_to_constants_from_session_graph(
            sess, sess.graph.as_graph_def(), list(output_names))


def build_inference_network(spec, batch_size=None, is_training=False):
    """Builds `spec` in the default graph in the inference GraphDef's form
    (unfrozen: research/slim export_inference_graph's graph): a placeholder
    'input' [batch_size, size, size, 3] in [-1, 1], the network, and
    'logits' and 'probabilities' [batch_size, num_classes]."""
    images = tf.placeholder(
        tf.float32, [batch_size, spec.image_size, spec.image_size, 3],
        name=INPUT_NAME)
    logits, _ = nets_factory.build_network(spec, images,
                                           is_training=is_training)
    tf.identity(logits, name='logits')
    tf.nn.softmax(logits, name='probabilities')


def frozen_inference_graph(spec, checkpoint, batch_size=None,
                           moving_average='auto', fold=True):
    """Builds `spec`, restores `checkpoint`, returns the inference GraphDef.

    The graph takes 'input' [batch, size, size, 3] in [-1, 1] and gives
    'logits' and 'probabilities' [batch, num_classes].

    Returns:
      (GraphDef, FoldReport or None).
    """
    graph = tf.Graph()
    with graph.as_default():
        build_inference_network(spec, batch_size)
        with tf.Session(graph=graph) as sess:
            checkpoints.restore(sess, checkpoint, moving_average=moving_average)
            frozen = freeze_session(sess)
    if not fold:
        return frozen, None
    return optimize_for_inference(frozen)


