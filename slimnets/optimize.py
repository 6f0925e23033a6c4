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

`rewrite_for_tensorflow_cpu` rewrites a folded graph for TensorFlow's own
CPU kernels (the 'tensorflow' runtime only; exports keep the folded graph):
a small pointwise (1x1, stride 1) convolution becomes a MatMul over
[N * H * W, C] pixels, with its bias and activation, which oneDNN runs on
one thread where it spreads the convolution over all (at batch 1 the
hand-off costs more than the work); a global AvgPool becomes a Mean;
and hard-swish gets back the `* 1/6` that `fold_scalar_multiplies` moved
into the next convolution, the form oneDNN fuses into the convolution
before it (that convolution then stays a convolution).

`frozen_inference_graph(...)` builds a network, restores a checkpoint and
returns the folded GraphDef with input 'input' and outputs 'logits' and
'probabilities'; `FrozenModel` runs such a GraphDef in-process.
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

_BATCH_NORMS = ('FusedBatchNorm', 'FusedBatchNormV2', 'FusedBatchNormV3')
_CONVOLUTIONS = ('Conv2D', 'DepthwiseConv2dNative')

_ACTIVATIONS = ('Relu', 'Relu6')
# A pointwise convolution of at most this many multiply-adds per image
# becomes a MatMul (`rewrite_for_tensorflow_cpu`).  Measured on a 2-core
# AVX-512 CPU at batch 1: oneDNN spreads even small 1x1 convolutions over
# its threads, and the hand-off costs more than the work (MobileNet v2's
# and v3's 28x28 and smaller layers, 1 to 11 M MACs, take 1.5x to 5x as
# long as the same MatMul, which runs them on one thread); above about
# 16 M (MobileNet v1's 26 to 51 M layers) both run in parallel alike at
# batch 1, and at batch 16 the convolution is 1-2% faster.
POINTWISE_MATMUL_MACS = 1 << 24
_FLOAT = tf.float32.as_datatype_enum
_INT32 = tf.int32.as_datatype_enum

FoldReport = collections.namedtuple('FoldReport', ['folded', 'left'])
CpuRewrite = collections.namedtuple(
    'CpuRewrite', ['pointwise', 'global_pools', 'hard_swish_scales'])


def _producer(name):
    """'node:0' or '^node' -> 'node'."""
    return name.lstrip('^').split(':')[0]


def _constant_through_identities(nodes, name):
    """The Const node behind `name`, following Identity ops, or None."""
    node = nodes.get(_producer(name))
    while node is not None and node.op == 'Identity':
        node = nodes.get(_producer(node.input[0]))
    return node if node is not None and node.op == 'Const' else None


def _empty_like(graph_def):
    """A GraphDef with `graph_def`'s versions and function library only."""
    output = tf.GraphDef()
    output.versions.CopyFrom(graph_def.versions)
    output.library.CopyFrom(graph_def.library)
    return output


def _consumers(graph_def):
    counts = collections.Counter()
    for node in graph_def.node:
        for name in node.input:
            counts[_producer(name)] += 1
    return counts


def _const_node(name, value):
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
    consumers = _consumers(graph_def)
    replaced = {}      # batch-norm name -> BiasAdd NodeDef
    new_weights = {}   # convolution name -> Const NodeDef
    left = []
    for node in graph_def.node:
        if node.op not in _BATCH_NORMS:
            continue
        if node.attr['is_training'].b:
            left.append(node.name)
            continue
        conv = nodes.get(_producer(node.input[0]))
        params = [_constant_through_identities(nodes, n) for n in node.input[1:5]]
        weights = conv is not None and conv.op in _CONVOLUTIONS and \
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
        new_weights[conv.name] = _const_node(conv.name + '/folded_weights',
                                             folded_kernel.astype(kernel.dtype))
        bias_node = tf.NodeDef()
        bias_node.name = node.name
        bias_node.op = 'BiasAdd'
        bias_node.input.extend([node.input[0], node.name + '/folded_bias'])
        bias_node.attr['T'].CopyFrom(node.attr['T'])
        bias_node.attr['data_format'].s = b'NHWC'
        replaced[node.name] = (bias_node, _const_node(
            node.name + '/folded_bias', bias.astype(kernel.dtype)))

    output = _empty_like(graph_def)
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
            consumers[_producer(name)].append((node, index))
    weight_users = collections.Counter(
        _producer(node.input[1]) for node in graph_def.node
        if node.op in _CONVOLUTIONS)
    rewired = {}   # convolution name -> new input 0
    scaled = {}    # weight Const name -> factor
    removed = set()
    for node in graph_def.node:
        if node.op != 'Mul' or len(node.input) != 2:
            continue
        scalar = [i for i, name in enumerate(node.input)
                  if (nodes.get(_producer(name)) is not None and
                      nodes[_producer(name)].op == 'Const' and
                      tf.make_ndarray(nodes[_producer(name)].attr['value']
                                      .tensor).size == 1)]
        users = consumers[node.name]
        if len(scalar) != 1 or not users or any(
                user.op not in _CONVOLUTIONS or index != 0 or
                nodes.get(_producer(user.input[1])) is None or
                nodes[_producer(user.input[1])].op != 'Const' or
                weight_users[_producer(user.input[1])] != 1 or
                user.name in rewired
                for user, index in users):
            continue
        factor = float(tf.make_ndarray(
            nodes[_producer(node.input[scalar[0]])].attr['value'].tensor))
        for user, _ in users:
            rewired[user.name] = node.input[1 - scalar[0]]
            scaled[_producer(user.input[1])] = factor
        removed.add(node.name)
    output = _empty_like(graph_def)
    for node in graph_def.node:
        if node.name in removed:
            continue
        copy = output.node.add()
        copy.CopyFrom(node)
        if node.name in rewired:
            copy.input[0] = rewired[node.name]
            # Recorded so that the weights can be read back unscaled
            # (checkpoints.converters); '_' attributes are TF-internal.
            copy.attr[INPUT_SCALE_ATTR].f = scaled[_producer(node.input[1])]
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
        producer = _producer(name)
        while producer in identities:
            name = identities[producer]
            producer = _producer(name)
        return '^' + producer if control else name

    output = _empty_like(graph_def)
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
        stack.extend(_producer(i) for i in nodes[name].input)
    output = _empty_like(graph_def)
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


def _static_shapes(graph_def):
    """Node name -> static shape of its first output (a list, None for an
    unknown dimension, or None for an unknown rank)."""
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(graph_def, name='')
    return {op.name: op.outputs[0].shape.as_list()
            if op.outputs and op.outputs[0].shape.rank is not None else None
            for op in graph.get_operations()}


def _reshape_node(name, tensor, shape):
    """(Const shape, Reshape) nodes giving `tensor` the static `shape`."""
    shape_node = _const_node(name + '/shape', np.array(shape, np.int32))
    node = tf.NodeDef()
    node.name = name
    node.op = 'Reshape'
    node.input.extend([tensor, shape_node.name])
    node.attr['T'].type = _FLOAT
    node.attr['Tshape'].type = _INT32
    return [shape_node, node]


def _data_format(node):
    """b'NHWC' (the default, or where the op has no layout) or the node's
    `data_format`, read without adding the attribute to the node."""
    return node.attr['data_format'].s or b'NHWC' \
        if 'data_format' in node.attr else b'NHWC'


def _is_constant(nodes, name, value):
    node = nodes.get(_producer(name))
    return node is not None and node.op == 'Const' and np.array_equal(
        tf.make_ndarray(node.attr['value'].tensor), np.float32(value))


def _hard_swish_input(nodes, node):
    """x when `node` is hard-swish's `x * relu6(x + 3)` (the `* 1/6`
    folded away or not), else None."""
    if node is None or node.op != 'Mul' or len(node.input) != 2:
        return None
    for index in (0, 1):
        relu = nodes.get(_producer(node.input[index]))
        add = relu is not None and relu.op == 'Relu6' and \
            nodes.get(_producer(relu.input[0]))
        x = node.input[1 - index]
        if add and add.op in ('Add', 'AddV2') and x in add.input and \
                _is_constant(nodes, add.input[1 - list(add.input).index(x)],
                             3.0):
            return x
    return None


def _restore_hard_swish_scales(graph_def):
    """Puts back `h * c` in front of each convolution reading a hard-swish
    `h` whose weights absorbed c (`INPUT_SCALE_ATTR`, c = 1/6), dividing the
    weights by c again: `x * relu6(x + 3) * 1/6` after a convolution and
    its bias is the pattern oneDNN fuses into that convolution.

    Returns:
      (new GraphDef, number of convolutions restored).
    """
    nodes = {node.name: node for node in graph_def.node}
    weight_users = collections.Counter(
        _producer(node.input[1]) for node in graph_def.node
        if node.op in _CONVOLUTIONS)
    restored = {node.name: node.attr[INPUT_SCALE_ATTR].f
                for node in graph_def.node
                if node.op in _CONVOLUTIONS and INPUT_SCALE_ATTR in node.attr
                and node.attr[INPUT_SCALE_ATTR].f != 0
                and weight_users[_producer(node.input[1])] == 1
                and nodes[_producer(node.input[1])].op == 'Const'
                and _hard_swish_input(nodes, nodes.get(
                    _producer(node.input[0]))) is not None}
    weights = {_producer(nodes[name].input[1]): scale
               for name, scale in restored.items()}
    scaled = {}  # (hard-swish tensor, scale) -> Mul name
    output = _empty_like(graph_def)
    for node in graph_def.node:
        copy = output.node.add()
        copy.CopyFrom(node)
        if node.name in weights:
            value = tf.make_ndarray(node.attr['value'].tensor)
            copy.attr['value'].tensor.CopyFrom(tf.make_tensor_proto(
                (value / np.float32(weights[node.name])).astype(value.dtype)))
        if node.name not in restored:
            continue
        key = (node.input[0], restored[node.name])
        if key not in scaled:
            scaled[key] = '%s/scale_%d' % (_producer(node.input[0]),
                                           len(scaled))
            factor = _const_node(scaled[key] + '/y',
                                 np.float32(restored[node.name]))
            multiply = tf.NodeDef()
            multiply.name = scaled[key]
            multiply.op = 'Mul'
            multiply.input.extend([node.input[0], factor.name])
            multiply.attr['T'].type = _FLOAT
            output.node.extend([factor, multiply])
        copy.input[0] = scaled[key]
        del copy.attr[INPUT_SCALE_ATTR]
    return output, len(restored)


def _pointwise_chains(graph_def, nodes, shapes):
    """Conv name -> (kernel [1, 1, C, K], output shape, [conv, BiasAdd?,
    activation?]) for each rewritable pointwise convolution: at most
    `POINTWISE_MATMUL_MACS` per image, and not one whose bias feeds a
    hard-swish (oneDNN fuses that into a convolution, not into a MatMul)."""
    consumers = collections.defaultdict(list)
    for node in graph_def.node:
        for name in node.input:
            consumers[_producer(name)].append(node)
    chains = {}
    for node in graph_def.node:
        weights = nodes.get(_producer(node.input[1])) if node.op == 'Conv2D' \
            else None
        if weights is None or weights.op != 'Const' or \
                node.input[1].startswith('^'):
            continue
        kernel = tf.make_ndarray(weights.attr['value'].tensor)
        shape = shapes.get(node.name)
        if (kernel.shape[:2] != (1, 1) or kernel.dtype != np.float32 or
                list(node.attr['strides'].list.i) != [1, 1, 1, 1] or
                _data_format(node) != b'NHWC' or
                node.attr['padding'].s not in (b'SAME', b'VALID') or
                shape is None or None in shape[1:] or
                shape[1] * shape[2] * kernel.shape[2] * kernel.shape[3] >
                POINTWISE_MATMUL_MACS):
            continue
        chain = [node]
        while len(consumers[chain[-1].name]) == 1:
            user = consumers[chain[-1].name][0]
            wanted = ('BiasAdd',) if len(chain) == 1 else \
                _ACTIVATIONS if len(chain) == 2 else ()
            if user.op not in wanted or _producer(user.input[0]) != \
                    chain[-1].name or _data_format(user) != b'NHWC':
                break
            chain.append(user)
        if any(_hard_swish_input(nodes, user) is not None
               for user in consumers[chain[-1].name]):
            continue
        chains[node.name] = (kernel, shape, chain)
    return chains


def rewrite_for_tensorflow_cpu(graph_def):
    """Rewrites a folded inference graph for TensorFlow's CPU kernels.

    Hard-swish's `* 1/6` comes back in front of the convolutions that
    absorbed it (`_restore_hard_swish_scales`).  A pointwise convolution
    (of at most `POINTWISE_MATMUL_MACS` per image)
    `x [N, H, W, C] -> conv 1x1 (+ BiasAdd (+ Relu/Relu6))` becomes
    `Reshape [N*H*W, C] -> MatMul [C, K] (+ BiasAdd (+ activation)) ->
    Reshape [N, H, W, K]` (Grappler fuses the MatMul with its bias and
    activation) unless its bias feeds a hard-swish; a global `AvgPool`
    (VALID, window = the whole [H, W] input) becomes `Mean` over axes 1
    and 2.  The last node of each rewritten chain keeps its name, so every
    consumer (and the outputs) stay wired.  Only nodes with static spatial
    shapes are rewritten; the batch dimension stays free.  A fake-quantized
    graph (QAT) is returned as it is: reordered float sums could move a
    value across a quantization step.

    Returns:
      (new GraphDef, CpuRewrite(pointwise=convolutions rewritten,
      global_pools=pools rewritten, hard_swish_scales=scalings restored)).
    """
    if any(node.op.startswith('FakeQuant') for node in graph_def.node):
        return graph_def, CpuRewrite(0, 0, 0)
    graph_def, restored = _restore_hard_swish_scales(graph_def)
    nodes = {node.name: node for node in graph_def.node}
    shapes = _static_shapes(graph_def)
    chains = _pointwise_chains(graph_def, nodes, shapes)
    last_of = {chain[-1].name: conv for conv, (_, _, chain) in chains.items()}
    output = _empty_like(graph_def)
    pools = 0
    for node in graph_def.node:
        if node.name in chains:
            kernel, _, chain = chains[node.name]
            flat = node.name + '/pixels'
            matrix = _const_node(node.name + '/matrix',
                                 kernel.reshape(kernel.shape[2:]))
            output.node.extend(_reshape_node(flat, node.input[0],
                                             [-1, kernel.shape[2]]))
            output.node.extend([matrix])
            matmul = output.node.add()
            matmul.name = node.name if len(chain) > 1 else \
                node.name + '/matmul'
            matmul.op = 'MatMul'
            matmul.input.extend([flat, matrix.name])
            matmul.attr['T'].type = _FLOAT
            matmul.attr['transpose_a'].b = False
            matmul.attr['transpose_b'].b = False
        elif node.name in last_of:
            copy = output.node.add()
            copy.CopyFrom(node)
            copy.name = node.name + '/matmul'
        elif node.op == 'AvgPool' and _is_global_pool(node, shapes):
            axes = _const_node(node.name + '/axes', np.array([1, 2], np.int32))
            mean = tf.NodeDef()
            mean.name = node.name
            mean.op = 'Mean'
            mean.input.extend([node.input[0], axes.name])
            mean.attr['T'].CopyFrom(node.attr['T'])
            mean.attr['Tidx'].type = _INT32
            mean.attr['keep_dims'].b = True
            output.node.extend([axes, mean])
            pools += 1
            continue
        else:
            output.node.add().CopyFrom(node)
            continue
        if node.name in last_of:  # restore [N, H, W, K] under the old name
            _, shape, _ = chains[last_of[node.name]]
            output.node.extend(_reshape_node(node.name, node.name + '/matmul',
                                             [-1] + shape[1:]))
    return output, CpuRewrite(len(chains), pools, restored)


def _is_global_pool(node, shapes):
    shape = shapes.get(_producer(node.input[0]))
    return (shape is not None and len(shape) == 4 and
            None not in shape[1:3] and
            node.attr['padding'].s == b'VALID' and
            _data_format(node) == b'NHWC' and
            list(node.attr['ksize'].list.i) == [1] + shape[1:3] + [1])


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


class FrozenModel(object):
    """Runs an inference GraphDef in its own graph and session."""

    def __init__(self, graph_def, input_name=INPUT_NAME,
                 output_names=OUTPUT_NAMES, jit_compile=False):
        """Imports `graph_def`; `jit_compile` runs it through XLA (on a
        2-core CPU this fuses MobileNet v1 further: about 8% faster at
        batch 16, see benchmarks/)."""
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf.import_graph_def(graph_def, name='')
        self.input = self.graph.get_tensor_by_name(input_name + ':0')
        self.outputs = {name: self.graph.get_tensor_by_name(name + ':0')
                        for name in output_names}
        config = tf.ConfigProto()
        if jit_compile:
            config.graph_options.optimizer_options.global_jit_level = (
                tf.OptimizerOptions.ON_1)
        self.session = tf.Session(graph=self.graph, config=config)

    @classmethod
    def load(cls, path, **kwargs):
        graph_def = tf.GraphDef()
        with tf.io.gfile.GFile(path, 'rb') as handle:
            graph_def.ParseFromString(handle.read())
        return cls(graph_def, **kwargs)

    def run(self, images, output='probabilities'):
        """[N, size, size, 3] in [-1, 1] -> the named output."""
        return self.session.run(self.outputs[output], {self.input: images})

    def close(self):
        self.session.close()
