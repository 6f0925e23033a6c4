"""The 'tensorflow' runtime: an inference GraphDef in a TensorFlow session.

`rewrite_for_tensorflow_cpu` rewrites a folded graph for TensorFlow's own
CPU kernels (the 'tensorflow' runtime only; exports keep the folded graph):
a small pointwise (1x1, stride 1) convolution becomes a MatMul over
[N * H * W, C] pixels, with its bias and activation, which oneDNN runs on
one thread where it spreads the convolution over all (at batch 1 the
hand-off costs more than the work); a global AvgPool becomes a Mean;
and hard-swish gets back the `* 1/6` that `fold_scalar_multiplies` moved
into the next convolution, the form oneDNN fuses into the convolution
before it (that convolution then stays a convolution).
"""

import collections

import numpy as np
import tensorflow.compat.v1 as tf

from slimnets import optimize
from slimnets import tflog
from slimnets.graph_format import INPUT_NAME
from slimnets.graph_format import INPUT_SCALE_ATTR
from slimnets.runtimes.base import OUTPUT_NAME
from slimnets.runtimes.base import Runtime
from slimnets.runtimes.base import check_images

__all__ = ['TensorFlowRuntime', 'ONE_THREAD_BATCH', 'POINTWISE_MATMUL_MACS',
           'CpuRewrite', 'rewrite_for_tensorflow_cpu']

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


CpuRewrite = collections.namedtuple(
    'CpuRewrite', ['pointwise', 'global_pools', 'hard_swish_scales'])


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
    shape_node = optimize.const_node(name + '/shape', np.array(shape, np.int32))
    node = tf.NodeDef()
    node.name = name
    node.op = 'Reshape'
    node.input.extend([tensor, shape_node.name])
    node.attr['T'].type = optimize.FLOAT
    node.attr['Tshape'].type = optimize.INT32
    return [shape_node, node]


def _data_format(node):
    """b'NHWC' (the default, or where the op has no layout) or the node's
    `data_format`, read without adding the attribute to the node."""
    return node.attr['data_format'].s or b'NHWC' \
        if 'data_format' in node.attr else b'NHWC'


def _is_constant(nodes, name, value):
    node = nodes.get(optimize.producer_of(name))
    return node is not None and node.op == 'Const' and np.array_equal(
        tf.make_ndarray(node.attr['value'].tensor), np.float32(value))


def _hard_swish_input(nodes, node):
    """x when `node` is hard-swish's `x * relu6(x + 3)` (the `* 1/6`
    folded away or not), else None."""
    if node is None or node.op != 'Mul' or len(node.input) != 2:
        return None
    for index in (0, 1):
        relu = nodes.get(optimize.producer_of(node.input[index]))
        add = relu is not None and relu.op == 'Relu6' and \
            nodes.get(optimize.producer_of(relu.input[0]))
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
        optimize.producer_of(node.input[1]) for node in graph_def.node
        if node.op in optimize.CONVOLUTIONS)
    restored = {node.name: node.attr[INPUT_SCALE_ATTR].f
                for node in graph_def.node
                if node.op in optimize.CONVOLUTIONS and INPUT_SCALE_ATTR in node.attr
                and node.attr[INPUT_SCALE_ATTR].f != 0
                and weight_users[optimize.producer_of(node.input[1])] == 1
                and nodes[optimize.producer_of(node.input[1])].op == 'Const'
                and _hard_swish_input(nodes, nodes.get(
                    optimize.producer_of(node.input[0]))) is not None}
    weights = {optimize.producer_of(nodes[name].input[1]): scale
               for name, scale in restored.items()}
    scaled = {}  # (hard-swish tensor, scale) -> Mul name
    output = optimize.empty_like(graph_def)
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
            scaled[key] = '%s/scale_%d' % (optimize.producer_of(node.input[0]),
                                           len(scaled))
            factor = optimize.const_node(scaled[key] + '/y',
                                         np.float32(restored[node.name]))
            multiply = tf.NodeDef()
            multiply.name = scaled[key]
            multiply.op = 'Mul'
            multiply.input.extend([node.input[0], factor.name])
            multiply.attr['T'].type = optimize.FLOAT
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
            consumers[optimize.producer_of(name)].append(node)
    chains = {}
    for node in graph_def.node:
        weights = nodes.get(optimize.producer_of(node.input[1])) if node.op == 'Conv2D' \
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
            if user.op not in wanted or optimize.producer_of(user.input[0]) != \
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
    output = optimize.empty_like(graph_def)
    pools = 0
    for node in graph_def.node:
        if node.name in chains:
            kernel, _, chain = chains[node.name]
            flat = node.name + '/pixels'
            matrix = optimize.const_node(node.name + '/matrix',
                                         kernel.reshape(kernel.shape[2:]))
            output.node.extend(_reshape_node(flat, node.input[0],
                                             [-1, kernel.shape[2]]))
            output.node.extend([matrix])
            matmul = output.node.add()
            matmul.name = node.name if len(chain) > 1 else \
                node.name + '/matmul'
            matmul.op = 'MatMul'
            matmul.input.extend([flat, matrix.name])
            matmul.attr['T'].type = optimize.FLOAT
            matmul.attr['transpose_a'].b = False
            matmul.attr['transpose_b'].b = False
        elif node.name in last_of:
            copy = output.node.add()
            copy.CopyFrom(node)
            copy.name = node.name + '/matmul'
        elif node.op == 'AvgPool' and _is_global_pool(node, shapes):
            axes = optimize.const_node(node.name + '/axes', np.array([1, 2], np.int32))
            mean = tf.NodeDef()
            mean.name = node.name
            mean.op = 'Mean'
            mean.input.extend([node.input[0], axes.name])
            mean.attr['T'].CopyFrom(node.attr['T'])
            mean.attr['Tidx'].type = optimize.INT32
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
    shape = shapes.get(optimize.producer_of(node.input[0]))
    return (shape is not None and len(shape) == 4 and
            None not in shape[1:3] and
            node.attr['padding'].s == b'VALID' and
            _data_format(node) == b'NHWC' and
            list(node.attr['ksize'].list.i) == [1] + shape[1:3] + [1])


# With tflog.THREAD_POOLS_VARIABLE (TF_OVERRIDE_GLOBAL_THREADPOOL=1; the
# command line sets it) set before TensorFlow makes its first device, each
# session can have an intra-op thread pool of its own; the
# 'tensorflow' runtime then runs batches up to ONE_THREAD_BATCH in a second
# session on one thread, in the caller's thread (no hand-off between
# threads).  Measured on 2 cores, at batch 1 that takes 0.51x (v3-small) to
# 0.83x (v1) the time of the shared two-thread pool, idle or busy.
ONE_THREAD_BATCH = 1


class TensorFlowRuntime(Runtime):
    """The GraphDef rewritten for TensorFlow's CPU kernels
    (`rewrite_for_tensorflow_cpu`: small pointwise convolutions
    as fused MatMuls, global pools as Means, hard-swish fused into its
    convolution; at batch 1 on a 2-core CPU MobileNet v3-small runs about
    1.9x as fast, v3-large 1.4x, v2 up to 1.15x (on a busy machine), v1
    alike: see benchmarks/tensorflow_path.py), in its own graph and
    session, called through `Session.make_callable` (no per-call
    feed/fetch resolution); batch 1 in a one-thread session of its own
    where sessions can have their own pools (`ONE_THREAD_BATCH`).
    `rewrite` says what was rewritten (a `CpuRewrite`, None when
    `rewrite=False`)."""

    name = 'tensorflow'

    def __init__(self, graph_def, num_threads=None, rewrite=True,
                 jit_compile=False):
        """Imports `graph_def` into a graph and session of its own.

        Args:
          graph_def: an inference GraphDef (input 'input' [N, size, size,
            3] float32 in [-1, 1]; output 'probabilities', and 'logits'
            where the graph has it).
          num_threads: the session's intra- and inter-op threads (None:
            TensorFlow's pools as the process set them, every core unless
            the process said otherwise).
          rewrite: rewrite the graph for TensorFlow's CPU kernels
            (`rewrite_for_tensorflow_cpu`); False runs it as given (what
            the exports and the checks against them run).
          jit_compile: ask for XLA's auto-clustering (on the CPU it only
            compiles with TF_XLA_FLAGS=--tf_xla_cpu_global_jit set before
            TensorFlow starts).
        """
        self.rewrite = None
        if rewrite:
            graph_def, self.rewrite = rewrite_for_tensorflow_cpu(graph_def)
        self.num_threads = num_threads
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf.import_graph_def(graph_def, name='')
        self.graph.finalize()
        output = self.graph.get_tensor_by_name(OUTPUT_NAME + ':0')
        feed = [self.graph.get_tensor_by_name(INPUT_NAME + ':0')]
        self._feed = feed
        self._calls = {}
        config = tf.ConfigProto()
        if num_threads:
            config = tf.ConfigProto(
                intra_op_parallelism_threads=num_threads,
                inter_op_parallelism_threads=num_threads,
                use_per_session_threads=tflog.session_thread_pools())
        if jit_compile:
            config.graph_options.optimizer_options.global_jit_level = (
                tf.OptimizerOptions.ON_1)
        self.session = tf.Session(graph=self.graph, config=config)
        self._call = self.session.make_callable(output, feed)
        self.one_thread_session = None   # see ONE_THREAD_BATCH
        if tflog.session_thread_pools() and num_threads in (None, 1):
            self.one_thread_session = tf.Session(
                graph=self.graph, config=tf.ConfigProto(
                    intra_op_parallelism_threads=1,
                    inter_op_parallelism_threads=1,
                    use_per_session_threads=True))
            call = self.one_thread_session.make_callable(
                output, feed, accept_options=True)
            in_caller = tf.RunOptions(inter_op_thread_pool=-1)
            self._one_thread_call = lambda images: call(images,
                                                        options=in_caller)

    def describe(self, batch_size=None):
        if self.one_thread_session is not None and batch_size is not None \
                and batch_size <= ONE_THREAD_BATCH:
            return '%s (batch %d on one thread)' % (self.name, batch_size)
        return self.name

    @classmethod
    def load(cls, path, **kwargs):
        """The runtime of a frozen GraphDef file (.pb)."""
        graph_def = tf.GraphDef()
        with tf.io.gfile.GFile(path, 'rb') as handle:
            graph_def.ParseFromString(handle.read())
        return cls(graph_def, **kwargs)

    def run(self, images, output=OUTPUT_NAME):
        """images [N, size, size, 3] float32 in [-1, 1] -> the named output
        ('probabilities' [N, classes], or 'logits')."""
        images = check_images(images)
        if output != OUTPUT_NAME:
            if output not in self._calls:
                self._calls[output] = self.session.make_callable(
                    self.graph.get_tensor_by_name(output + ':0'), self._feed)
            return self._calls[output](images)
        if self.one_thread_session is not None and \
                len(images) <= ONE_THREAD_BATCH:
            return self._one_thread_call(images)
        return self._call(images)

    def close(self):
        self.session.close()
        if self.one_thread_session is not None:
            self.one_thread_session.close()
