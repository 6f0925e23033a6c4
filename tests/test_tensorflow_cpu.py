"""The 'tensorflow' runtime's graph rewrite (optimize.rewrite_for_tensorflow_cpu).

Pointwise convolutions become MatMuls over the pixels and global AvgPools
become Means; the rewritten graph must compute the plain (unfolded) graph's
probabilities to 1e-5, at any batch size, and the TensorFlow runtime must
actually run it (Grappler fusing each MatMul with its bias and activation).
Measured here: the rewritten graph is 1e-9..4e-8 off the folded one on
full-size MobileNets, about 1e-7 off the unfolded one on the small models
below (the folding's own rounding).
"""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from slimnets import optimize
from slimnets import runtimes

import small_models

TOLERANCE = 1e-5


@pytest.fixture(scope='module', params=['mobilenet_v2', 'mobilenet_v3_small'])
def model(request, tmp_path_factory):
    """(folded GraphDef, plain probabilities of `images`, images [3, 96,
    96, 3])."""
    folder = tmp_path_factory.mktemp(request.param)
    depth = 0.35 if request.param == 'mobilenet_v2' else 0.5
    spec, prefix = small_models.calibrated_checkpoint(
        str(folder), network=request.param, depth=depth)
    folded, _ = optimize.frozen_inference_graph(spec, prefix)
    plain, _ = optimize.frozen_inference_graph(spec, prefix, fold=False)
    images = small_models.smooth_images(3, spec.image_size, seed=3)
    reference = optimize.FrozenModel(plain)
    try:
        expected = reference.run(images)
    finally:
        reference.close()
    return folded, expected, images


def _ops(graph_def):
    return [node.op for node in graph_def.node]


def _pointwise_convolutions(graph_def):
    nodes = {node.name: node for node in graph_def.node}
    return [node.name for node in graph_def.node if node.op == 'Conv2D' and
            tf.make_ndarray(nodes[node.input[1]].attr['value'].tensor)
            .shape[:2] == (1, 1)]


def test_every_pointwise_convolution_and_global_pool_is_rewritten(model):
    folded, _, _ = model
    before = folded.SerializeToString()
    pointwise = len(_pointwise_convolutions(folded))
    pools = _ops(folded).count('AvgPool')
    rewritten, report = optimize.rewrite_for_tensorflow_cpu(folded)
    assert folded.SerializeToString() == before  # the input is left alone
    assert pointwise > 10 and pools >= 1
    assert report == optimize.CpuRewrite(pointwise, pools)
    assert not _pointwise_convolutions(rewritten)
    assert _ops(rewritten).count('MatMul') == pointwise
    assert 'AvgPool' not in _ops(rewritten)
    assert _ops(rewritten).count('Mean') == pools
    # the names the runtimes feed and fetch are still there
    names = {node.name for node in rewritten.node}
    assert {'input', 'logits', 'probabilities'} <= names


@pytest.mark.parametrize('batch', [1, 3])
def test_rewritten_graph_equals_plain_graph(model, batch):
    folded, expected, images = model
    runtime = runtimes.TensorFlowRuntime(folded)
    try:
        actual = runtime.run(images[:batch])
    finally:
        runtime.close()
    assert actual.shape == expected[:batch].shape
    assert float(np.max(np.abs(actual - expected[:batch]))) < TOLERANCE
    assert (actual.argmax(1) == expected[:batch].argmax(1)).all()


def test_runtime_runs_fused_matmuls(model):
    """What the session executes: MatMuls fused with BiasAdd (+ ReLU),
    no pointwise convolution, no AvgPool."""
    folded, _, images = model
    runtime = runtimes.TensorFlowRuntime(folded)
    try:
        assert runtime.rewrite.pointwise > 10
        graph_def = runtime.graph.as_graph_def()
        nodes = {node.name: node for node in graph_def.node}
        # Grappler drops an all-zero bias (this fresh checkpoint's
        # squeeze-excite biases): those MatMuls have nothing to fuse.
        biased = [node for node in graph_def.node if node.op == 'BiasAdd'
                  and nodes[node.input[0]].op == 'MatMul' and np.any(
                      tf.make_ndarray(nodes[node.input[1]].attr['value']
                                      .tensor))]
        assert len(biased) > 10
        metadata = tf.RunMetadata()
        runtime.session.run(
            'probabilities:0', {'input:0': images[:1]},
            options=tf.RunOptions(output_partition_graphs=True),
            run_metadata=metadata)
    finally:
        runtime.close()
    executed = [node for graph in metadata.partition_graphs
                for node in graph.node]
    fused = [tuple(node.attr['fused_ops'].list.s) for node in executed
             if node.op.endswith('FusedMatMul')]
    assert {(b'BiasAdd', b'Relu6'), (b'BiasAdd', b'Relu')} & set(fused)
    assert len(fused) >= len(biased)
    assert not [node.op for node in executed if 'AvgPool' in node.op]


def _graph(build):
    graph = tf.Graph()
    with graph.as_default():
        build()
    return graph.as_graph_def()


def test_what_is_left_alone():
    """Strided or spatial kernels, unknown spatial sizes, windows smaller
    than the input, and a bias with a second reader stay as they are (the
    bias's reader gets the rewritten chain's 4-D output)."""
    rng = np.random.RandomState(0)
    pointwise = rng.normal(size=[1, 1, 4, 6]).astype(np.float32)

    def build():
        kernel = tf.constant(pointwise)
        fixed = tf.placeholder(tf.float32, [None, 8, 8, 4], name='input')
        free = tf.placeholder(tf.float32, [None, None, None, 4], name='free')
        tf.nn.conv2d(fixed, kernel, [1, 2, 2, 1], 'SAME', name='strided')
        tf.nn.conv2d(fixed, tf.constant(rng.normal(size=[3, 3, 4, 6]).astype(
            np.float32)), [1, 1, 1, 1], 'SAME', name='spatial')
        tf.nn.conv2d(free, kernel, [1, 1, 1, 1], 'SAME', name='dynamic')
        tf.nn.avg_pool2d(fixed, [1, 4, 4, 1], [1, 4, 4, 1], 'VALID',
                         name='local_pool')
        shared = tf.nn.bias_add(tf.nn.conv2d(fixed, kernel, [1, 1, 1, 1],
                                             'VALID', name='pointwise'),
                                tf.constant(np.arange(6, dtype=np.float32)),
                                name='shared_bias')
        tf.nn.relu6(shared, name='relu6')
        tf.identity(shared, name='second_reader')
    graph_def = _graph(build)
    rewritten, report = optimize.rewrite_for_tensorflow_cpu(graph_def)
    assert report == optimize.CpuRewrite(1, 0)
    ops = {node.name: node.op for node in rewritten.node}
    assert [ops[n] for n in ('strided', 'spatial', 'dynamic')] == \
        ['Conv2D'] * 3
    assert ops['local_pool'] == 'AvgPool'
    # the chain stops at the bias, which has two readers
    assert ops['pointwise'] == 'MatMul' and ops['shared_bias'] == 'Reshape'
    assert ops['relu6'] == 'Relu6'
    images = rng.uniform(-1, 1, [2, 8, 8, 4]).astype(np.float32)
    results = []
    for graph in (graph_def, rewritten):
        with tf.Graph().as_default() as imported, \
                tf.Session(graph=imported) as session:
            tf.import_graph_def(graph, name='')
            results.append(session.run(['relu6:0', 'second_reader:0'],
                                       {'input:0': images}))
    for before, after in zip(*results):
        assert after.shape == (2, 8, 8, 6)
        assert float(np.max(np.abs(after - before))) < TOLERANCE
