"""The 'tensorflow' runtime's graph rewrite (runtimes.rewrite_for_tensorflow_cpu).

Pointwise convolutions become MatMuls over the pixels and global AvgPools
become Means; the rewritten graph must compute the plain (unfolded) graph's
probabilities to 1e-5, at any batch size, and the TensorFlow runtime must
actually run it (Grappler fusing each MatMul with its bias and activation).
Measured here: the rewritten graph is 1e-9..4e-8 off the folded one on
full-size MobileNets, about 1e-7 off the unfolded one on the small models
below (the folding's own rounding).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from slimnets import optimize
from slimnets import runtimes
from slimnets import tflog
from slimnets.graph_format import INPUT_SCALE_ATTR

import small_models

TOLERANCE = 1e-5


@pytest.fixture(scope='module', params=['mobilenet_v2', 'mobilenet_v3_small'])
def model(request, tmp_path_factory):
    """(network, folded GraphDef, plain probabilities of `images`, images
    [3, 96, 96, 3])."""
    folder = tmp_path_factory.mktemp(request.param)
    depth = 0.35 if request.param == 'mobilenet_v2' else 0.5
    spec, prefix = small_models.calibrated_checkpoint(
        str(folder), network=request.param, depth=depth)
    folded, _ = optimize.frozen_inference_graph(spec, prefix)
    plain, _ = optimize.frozen_inference_graph(spec, prefix, fold=False)
    images = small_models.smooth_images(3, spec.image_size, seed=3)
    reference = runtimes.TensorFlowRuntime(plain, rewrite=False)
    try:
        expected = reference.run(images)
    finally:
        reference.close()
    return request.param, folded, expected, images


def _ops(graph_def):
    return [node.op for node in graph_def.node]


def _pointwise_convolutions(graph_def):
    nodes = {node.name: node for node in graph_def.node}
    return [node.name for node in graph_def.node if node.op == 'Conv2D' and
            tf.make_ndarray(nodes[node.input[1]].attr['value'].tensor)
            .shape[:2] == (1, 1)]


def _feeds_hard_swish(graph_def, name):
    """Whether `name` (a convolution) -> BiasAdd -> x * relu6(x + 3)."""
    readers = {}
    for node in graph_def.node:
        for tensor in node.input:
            readers.setdefault(tensor.split(':')[0], []).append(node)
    bias = readers[name][0]
    return bias.op == 'BiasAdd' and sorted(
        node.op for node in readers[bias.name]) == ['AddV2', 'Mul']


def _executed(runtime, images):
    """The nodes the runtime's session runs (after Grappler)."""
    metadata = tf.RunMetadata()
    runtime.session.run('probabilities:0', {'input:0': images},
                        options=tf.RunOptions(output_partition_graphs=True),
                        run_metadata=metadata)
    return [node for graph in metadata.partition_graphs for node in graph.node]


def test_every_pointwise_convolution_and_global_pool_is_rewritten(model):
    network, folded, _, _ = model
    before = folded.SerializeToString()
    pointwise = _pointwise_convolutions(folded)
    pools = _ops(folded).count('AvgPool')
    scaled = [node for node in folded.node
              if INPUT_SCALE_ATTR in node.attr]
    rewritten, report = runtimes.rewrite_for_tensorflow_cpu(folded)
    assert folded.SerializeToString() == before  # the input is left alone
    assert len(pointwise) > 10 and pools >= 1
    # v3's hard-swish convolutions stay convolutions; the rest are MatMuls
    kept = [name for name in pointwise if _feeds_hard_swish(folded, name)]
    assert bool(kept) == bool(scaled) == (network == 'mobilenet_v3_small')
    assert report == runtimes.CpuRewrite(len(pointwise) - len(kept), pools,
                                         len(scaled))
    assert sorted(_pointwise_convolutions(rewritten)) == sorted(kept)
    assert _ops(rewritten).count('MatMul') == report.pointwise
    assert 'AvgPool' not in _ops(rewritten)
    assert _ops(rewritten).count('Mean') == pools
    assert not [node for node in rewritten.node
                if INPUT_SCALE_ATTR in node.attr]
    # the names the runtimes feed and fetch are still there
    names = {node.name for node in rewritten.node}
    assert {'input', 'logits', 'probabilities'} <= names


@pytest.mark.parametrize('batch', [1, 3])
def test_rewritten_graph_equals_plain_graph(model, batch):
    _, folded, expected, images = model
    runtime = runtimes.TensorFlowRuntime(folded)
    try:
        actual = runtime.run(images[:batch])
    finally:
        runtime.close()
    assert actual.shape == expected[:batch].shape
    assert float(np.max(np.abs(actual - expected[:batch]))) < TOLERANCE
    assert (actual.argmax(1) == expected[:batch].argmax(1)).all()


def test_runtime_runs_fused_matmuls(model):
    """What the session executes: MatMuls fused with BiasAdd (+ ReLU), no
    AvgPool; with oneDNN, hard-swish fused into the convolutions."""
    _, folded, _, images = model
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
        executed = _executed(runtime, images[:1])
    finally:
        runtime.close()
    fused = [tuple(node.attr['fused_ops'].list.s) for node in executed
             if node.op.endswith('FusedMatMul')]
    assert {(b'BiasAdd', b'Relu6'), (b'BiasAdd', b'Relu')} & set(fused)
    assert len(fused) >= len(biased)
    assert not [node.op for node in executed if 'AvgPool' in node.op]
    hard_swish = [node.op for node in executed
                  if b'_FusedHardSwish' in node.attr['fused_ops'].list.s]
    if runtime.rewrite.hard_swish_scales and \
            any(node.op.startswith('_Mkl') for node in executed):
        assert 'Conv2D' in str(hard_swish)
        assert 'DepthwiseConv2dNative' in str(hard_swish)
        assert len(hard_swish) >= runtime.rewrite.hard_swish_scales


def _graph(build):
    graph = tf.Graph()
    with graph.as_default():
        build()
    return graph.as_graph_def()


def test_what_is_left_alone():
    """Strided or spatial kernels, unknown spatial sizes, pointwise
    convolutions above `POINTWISE_MATMUL_MACS` per image, windows smaller
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
        side = 48   # 48 * 48 * 128 * 128 multiply-adds per image
        assert side ** 2 * 128 ** 2 > runtimes.tensorflow.POINTWISE_MATMUL_MACS
        tf.nn.conv2d(tf.placeholder(tf.float32, [None, side, side, 128]),
                     tf.zeros([1, 1, 128, 128]), 1, 'SAME', name='large')
        tf.nn.avg_pool2d(fixed, [1, 4, 4, 1], [1, 4, 4, 1], 'VALID',
                         name='local_pool')
        shared = tf.nn.bias_add(tf.nn.conv2d(fixed, kernel, [1, 1, 1, 1],
                                             'VALID', name='pointwise'),
                                tf.constant(np.arange(6, dtype=np.float32)),
                                name='shared_bias')
        tf.nn.relu6(shared, name='relu6')
        tf.identity(shared, name='second_reader')
    graph_def = _graph(build)
    rewritten, report = runtimes.rewrite_for_tensorflow_cpu(graph_def)
    assert report == runtimes.CpuRewrite(1, 0, 0)
    ops = {node.name: node.op for node in rewritten.node}
    assert [ops[n] for n in ('strided', 'spatial', 'dynamic', 'large')] == \
        ['Conv2D'] * 4
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


def test_hard_swish_gets_its_scale_back():
    """`fold_scalar_multiplies` moves hard-swish's 1/6 into the next
    convolution; the rewrite puts it back (weights divided again), keeps a
    pointwise convolution that feeds a hard-swish a convolution, and turns
    the pointwise convolution after it into a MatMul."""
    rng = np.random.RandomState(1)

    def weights(*shape):
        return tf.constant(rng.normal(0, 0.5, shape).astype(np.float32))

    def hard_swish(x):
        return x * tf.nn.relu6(x + 3.0) * (1.0 / 6)

    def build():
        x = tf.placeholder(tf.float32, [None, 8, 8, 4], name='input')
        x = hard_swish(tf.nn.bias_add(tf.nn.conv2d(
            x, weights(1, 1, 4, 8), 1, 'SAME', name='expand'), weights(8)))
        x = hard_swish(tf.nn.bias_add(tf.nn.depthwise_conv2d(
            x, weights(3, 3, 8, 1), [1, 1, 1, 1], 'SAME', name='depthwise'),
            weights(8)))
        tf.nn.bias_add(tf.nn.conv2d(x, weights(1, 1, 8, 6), 1, 'SAME',
                                    name='project'), weights(6), name='out')
    plain = _graph(build)
    folded, count = optimize.fold_scalar_multiplies(plain)
    assert count == 2
    rewritten, report = runtimes.rewrite_for_tensorflow_cpu(folded)
    assert report == runtimes.CpuRewrite(1, 0, 2)
    ops = {node.name: node.op for node in rewritten.node}
    assert ops['expand'] == 'Conv2D' and ops['project'] == 'MatMul'
    assert ops['depthwise'] == 'DepthwiseConv2dNative'
    assert _ops(rewritten).count('Mul') == _ops(plain).count('Mul')
    images = rng.uniform(-1, 1, [2, 8, 8, 4]).astype(np.float32)
    results = []
    for graph in (plain, rewritten):
        with tf.Graph().as_default() as imported, \
                tf.Session(graph=imported) as session:
            tf.import_graph_def(graph, name='')
            results.append(session.run('out:0', {'input:0': images}))
    assert float(np.max(np.abs(results[1] - results[0]))) < TOLERANCE * \
        max(1.0, float(np.max(np.abs(results[0]))))


def test_fake_quantized_graph_runs_as_it_is():
    def build():
        x = tf.placeholder(tf.float32, [None, 8, 8, 4], name='input')
        x = tf.quantization.fake_quant_with_min_max_args(x, -1.0, 1.0)
        tf.nn.avg_pool2d(tf.nn.conv2d(x, tf.ones([1, 1, 4, 2]), 1, 'SAME'),
                         [1, 8, 8, 1], [1, 1, 1, 1], 'VALID', name='out')
    graph_def = _graph(build)
    rewritten, report = runtimes.rewrite_for_tensorflow_cpu(graph_def)
    assert report == runtimes.CpuRewrite(0, 0, 0)
    assert rewritten.SerializeToString() == graph_def.SerializeToString()
    # without the fake quantization both would be rewritten
    plain = tf.GraphDef()
    plain.CopyFrom(graph_def)
    for node in plain.node:
        if node.op.startswith('FakeQuant'):
            node.op = 'Identity'
            for name in list(node.attr):
                del node.attr[name]
            node.attr['T'].type = tf.float32.as_datatype_enum
    assert runtimes.rewrite_for_tensorflow_cpu(plain)[1] == \
        runtimes.CpuRewrite(1, 1, 0)


_ONE_THREAD_SCRIPT = r'''
import json, os, resource, sys
import numpy as np
import tensorflow.compat.v1 as tf
from slimnets import runtimes
from slimnets import tflog

rng = np.random.RandomState(0)
graph = tf.Graph()
with graph.as_default():
    x = tf.placeholder(tf.float32, [None, 32, 32, 3], name='input')
    for shape in ([3, 3, 3, 16], [1, 1, 16, 32]):
        x = tf.nn.relu6(tf.nn.bias_add(tf.nn.conv2d(
            x, rng.normal(0, 0.3, shape).astype(np.float32), 1, 'SAME'),
            rng.normal(0, 0.1, shape[-1:]).astype(np.float32)))
    x = tf.nn.depthwise_conv2d(x, rng.normal(0, 0.3, [3, 3, 32, 1]).astype(
        np.float32), [1, 1, 1, 1], 'SAME')
    logits = tf.reduce_mean(x, [1, 2], name='logits')
    tf.nn.softmax(logits, name='probabilities')
runtime = runtimes.TensorFlowRuntime(graph.as_graph_def())
images = rng.uniform(-1, 1, [3, 32, 32, 3]).astype(np.float32)
batch = runtime.run(images)               # the shared pool
single = [runtime.run(images[i:i + 1]) for i in range(3)]
before = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw
for _ in range(50):
    runtime.run(images[:1])
switches = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw - before
print(json.dumps({
    'one_thread': runtime.one_thread_session is not None,
    'difference': float(np.max(np.abs(np.concatenate(single) - batch))),
    'switches_per_call': switches / 50.0}))
runtime.close()
'''


def test_batch_one_runs_in_the_callers_thread_with_own_pools(tmp_path):
    """With TF_OVERRIDE_GLOBAL_THREADPOOL=1 from the start (a process of
    its own: TensorFlow reads it once), batch 1 runs in a one-thread
    session in the caller's thread: no thread hand-off, so the call blocks
    on nothing (voluntary context switches; the shared pool makes several
    per call), and it gives the shared session's probabilities."""
    script = tmp_path / 'one_thread.py'
    script.write_text(_ONE_THREAD_SCRIPT)
    environment = dict(os.environ, TF_OVERRIDE_GLOBAL_THREADPOOL='1',
                       TF_CPP_MIN_LOG_LEVEL='3')
    process = subprocess.Popen([sys.executable, str(script)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=environment)
    try:
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 0, err[-2000:]
    measured = json.loads(out.strip().splitlines()[-1])
    assert measured['one_thread']
    assert measured['difference'] < 1e-6
    assert measured['switches_per_call'] < 0.5


def test_one_pool_for_all_sessions_keeps_one_session(model, monkeypatch):
    monkeypatch.delenv(tflog.THREAD_POOLS_VARIABLE, raising=False)
    _, folded, _, _ = model
    runtime = runtimes.TensorFlowRuntime(folded)
    try:
        assert runtime.one_thread_session is None
    finally:
        runtime.close()
