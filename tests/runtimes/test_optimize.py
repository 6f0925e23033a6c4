"""The inference graph (batch norm and scalings folded) equals the plain
graph on the reference fixtures; the folding rules themselves."""

import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from slimnets import inference
from slimnets import optimize
from slimnets import runtimes

import reference

CLASSIFIER_FIXTURES = [
    'v1_025_112_small_input', 'v1_025_128', 'v1_050_160_globalpool',
    'v2_035_96', 'v2_050_128_c10', 'v3_edgetpu_050_96', 'v3_large_035_96_c10',
    'v3_large_min_050_96', 'v3_small_050_96_c10', 'v3_small_min_050_96',
    'train_v1_025_128', 'train_v2_035_96', 'train_v3_small_050_96',
]


@pytest.mark.parametrize('name', CLASSIFIER_FIXTURES)
def test_optimized_graph_equals_plain_graph(name):
    checkpoint = os.path.join(reference.fixture_dir(name), 'model.ckpt')
    images = reference.load_io(name)['input']
    spec, prefix = inference.model_spec(None, checkpoint, images.shape[1])
    plain, _ = optimize.frozen_inference_graph(spec, prefix, fold=False)
    folded, report = optimize.frozen_inference_graph(spec, prefix)
    assert report.folded > 0 and not report.left
    ops = {node.op for node in folded.node}
    assert not ops & {'FusedBatchNormV3', 'VariableV2', 'VarHandleOp',
                      'SaveV2', 'RestoreV2', 'Assign', 'ReadVariableOp'}
    assert [n.name for n in folded.node if n.op == 'Identity'] == ['logits']
    results = {}
    for label, graph_def in (('plain', plain), ('folded', folded)):
        model = runtimes.TensorFlowRuntime(graph_def, rewrite=False)
        try:
            results[label] = model.run(images, 'logits')
        finally:
            model.close()
    assert reference.scaled_error(results['folded'], results['plain']) < 1e-5


def test_fold_scalar_multiplies_rules():
    rng = np.random.RandomState(0)
    weights = rng.randn(3, 3, 2, 4).astype(np.float32)
    with tf.Graph().as_default() as graph:
        x = tf.placeholder(tf.float32, [1, 5, 5, 2], name='input')
        scaled = tf.multiply(x, tf.constant(0.5), name='scale')
        conv = tf.nn.conv2d(scaled, tf.constant(weights, name='w'), 1,
                            'SAME', name='conv')
        # A Mul that also feeds a non-convolution stays.
        kept = tf.multiply(x, tf.constant(2.0), name='kept')
        tf.add(tf.nn.conv2d(kept, tf.constant(weights, name='w2'), 1, 'SAME'),
               tf.reduce_sum(kept), name='other')
        tf.identity(conv, name='logits')
    graph_def, folded = optimize.fold_scalar_multiplies(graph.as_graph_def())
    assert folded == 1
    names = {node.name for node in graph_def.node}
    assert 'scale' not in names and 'kept' in names
    value = np.random.RandomState(1).rand(1, 5, 5, 2).astype(np.float32)
    outputs = []
    for definition in (graph.as_graph_def(), graph_def):
        with tf.Graph().as_default():
            tf.import_graph_def(definition, name='')
            with tf.Session() as sess:
                outputs.append(sess.run('logits:0', {'input:0': value}))
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-5, atol=1e-6)


def test_fold_batch_norms_leaves_training_mode_alone():
    with tf.Graph().as_default() as graph:
        x = tf.placeholder(tf.float32, [2, 4, 4, 3], name='input')
        conv = tf.nn.conv2d(x, tf.ones([1, 1, 3, 3]), 1, 'SAME')
        tf.nn.fused_batch_norm(conv, tf.ones([3]), tf.zeros([3]),
                               is_training=True, name='bn')
    _, report = optimize.fold_batch_norms(graph.as_graph_def())
    assert report.folded == 0 and report.left == ['bn']
