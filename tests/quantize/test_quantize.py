"""slimnets.quantize: tf.contrib.quantize's graph rewrite on current TF.

Names (what Google's `_quant` checkpoints hold), the numerics of the folded
batch norm (eval and training, before the quantization delay), the delay
itself, ranges learned by a few QAT steps, and every network of the tree
under both rewrites.
"""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from slimnets import nets_factory
from slimnets import quantize
from slimnets import slim
from slimnets.errors import QuantizationError
from slimnets.errors import SlimnetsError
from slimnets.quantize import quant_ops

BATCH = 4


def _session_config():
    # One thread each: the same reductions in the float and rewritten
    # graph; no grappler pass (it costs more than the one step it speeds).
    config = tf.ConfigProto(intra_op_parallelism_threads=1,
                            inter_op_parallelism_threads=1)
    config.graph_options.rewrite_options.disable_meta_optimizer = True
    return config


def _images(size, seed=0, count=BATCH):
    rng = np.random.RandomState(seed)
    return rng.uniform(-1, 1, (count, size, size, 3)).astype(np.float32)


def _build(network, size, is_training, kwargs, batch=BATCH):
    x = tf.placeholder(tf.float32, [batch, size, size, 3], name='input')
    fn = nets_factory.get_network_fn(network, 7, is_training=is_training)
    logits, _ = fn(x, **kwargs)
    return x, logits


def _randomize_batch_norms(sess):
    """Moving statistics and gammas away from the identity."""
    rng = np.random.RandomState(1)
    for variable in tf.global_variables():
        name = variable.op.name
        shape = variable.shape.as_list()
        if name.endswith('moving_mean') or name.endswith('beta'):
            variable.load(rng.normal(0, 0.2, shape).astype(np.float32), sess)
        elif name.endswith('moving_variance') or name.endswith('gamma'):
            variable.load(rng.uniform(0.5, 1.5, shape).astype(np.float32),
                          sess)


@pytest.fixture(scope='module')
def float_v1_checkpoint(tmp_path_factory):
    """A v1 0.25 float checkpoint at 64 px with non-trivial batch norms."""
    prefix = str(tmp_path_factory.mktemp('v1') / 'model.ckpt')
    with tf.Graph().as_default():
        _build('mobilenet_v1', 64, False, {'depth_multiplier': 0.25})
        with tf.Session(config=_session_config()) as sess:
            sess.run(tf.global_variables_initializer())
            _randomize_batch_norms(sess)
            tf.train.Saver().save(sess, prefix, write_meta_graph=False)
    return prefix


def _run_with(prefix, network, size, kwargs, rewrite=None, runs=1,
              is_training=False, feed=None):
    """Builds, rewrites, restores the float variables of `prefix` and
    returns the logits of each of `runs` runs."""
    with tf.Graph().as_default() as graph:
        x, logits = _build(network, size, is_training, kwargs)
        float_variables = tf.global_variables()
        if rewrite is not None:
            rewrite(graph)
        with tf.Session(config=_session_config()) as sess:
            sess.run(tf.global_variables_initializer())
            tf.train.Saver(float_variables).restore(sess, prefix)
            images = _images(size) if feed is None else feed
            return [sess.run(logits, {x: images}) for _ in range(runs)]


def test_the_four_functions_exist():
    for name in ('create_training_graph', 'create_eval_graph',
                 'experimental_create_training_graph',
                 'experimental_create_eval_graph'):
        assert callable(getattr(quantize, name))


def test_v1_eval_graph_carries_contrib_names():
    with tf.Graph().as_default() as graph:
        _build('mobilenet_v1', 128, False, {'depth_multiplier': 0.25},
               batch=1)
        quantize.create_eval_graph(graph)
        names = {v.op.name for v in tf.global_variables()}
        fake_quants = [op for op in graph.get_operations()
                       if op.type == 'FakeQuantWithMinMaxVars']
    layer = 'MobilenetV1/MobilenetV1/Conv2d_0/'
    for name in ('weights_quant/min', 'weights_quant/max', 'act_quant/min',
                 'act_quant/max'):
        assert layer + name in names
    assert 'MobilenetV1/Logits/Conv2d_1c_1x1/act_quant/max' in names
    # 27 convolutions + logits: their weights and their outputs.
    assert len(fake_quants) == 56
    weights = [op for op in fake_quants if '/weights_quant/' in op.name]
    assert len(weights) == 28
    assert all(op.get_attr('narrow_range') for op in weights)
    assert not any(op.get_attr('narrow_range') for op in fake_quants
                   if op not in weights)
    assert all(op.get_attr('num_bits') == 8 for op in fake_quants)
    # Eval graphs only read the ranges.
    assert not [op for op in graph.get_operations()
                if 'AssignMinEma' in op.name or 'AssignMinLast' in op.name]


def test_rewriting_twice_is_refused():
    with tf.Graph().as_default() as graph:
        _build('mobilenet_v1', 64, False, {'depth_multiplier': 0.25})
        quantize.create_eval_graph(graph)
        with pytest.raises(QuantizationError) as error:
            quantize.create_eval_graph(graph)
    assert isinstance(error.value, SlimnetsError)
    assert 'already quantized' in str(error.value)
    with tf.Graph().as_default() as graph:
        with pytest.raises(QuantizationError):
            quantize.experimental_create_eval_graph(graph, weight_bits=9)


def test_eval_fold_reproduces_the_float_network(float_v1_checkpoint):
    """With quantization delayed, the folded eval graph is the float one."""
    kwargs = {'depth_multiplier': 0.25}
    expected = _run_with(float_v1_checkpoint, 'mobilenet_v1', 64, kwargs)[0]
    folded = _run_with(
        float_v1_checkpoint, 'mobilenet_v1', 64, kwargs,
        lambda g: quantize.experimental_create_eval_graph(
            g, quant_delay=10 ** 9))[0]
    assert np.max(np.abs(folded - expected)) < 1e-4 * max(
        1.0, np.max(np.abs(expected)))


def test_training_graph_before_the_delay_is_the_float_one(
        float_v1_checkpoint):
    """Folding with batch-statistics corrections reproduces training-mode
    batch norm; quantization starts at run `quant_delay`."""
    kwargs = {'depth_multiplier': 0.25, 'dropout_keep_prob': 1.0}
    expected = _run_with(float_v1_checkpoint, 'mobilenet_v1', 64, kwargs,
                         is_training=True)[0]
    runs = _run_with(float_v1_checkpoint, 'mobilenet_v1', 64, kwargs,
                     lambda g: quantize.create_training_graph(
                         g, quant_delay=3),
                     runs=3, is_training=True)
    scale = max(1.0, np.max(np.abs(expected)))
    for before in runs[:2]:
        assert np.max(np.abs(before - expected)) < 1e-4 * scale
    # From run 3 the 8-bit grid shows.
    assert np.max(np.abs(runs[2] - expected)) > 1e-3 * scale


def test_training_graph_gradients_are_batch_norms(float_v1_checkpoint):
    """Before the delay the folded layers train as batch norm does: the
    same gradients (the batch statistics are differentiated through)."""
    labels = np.arange(BATCH) % 7
    gradients = []
    for rewrite in (None, lambda g: quantize.create_training_graph(
            g, quant_delay=10 ** 9)):
        with tf.Graph().as_default() as graph:
            x, logits = _build('mobilenet_v1', 64, True,
                               {'depth_multiplier': 0.25,
                                'dropout_keep_prob': 1.0})
            float_variables = tf.global_variables()
            if rewrite is not None:
                rewrite(graph)
            loss = tf.losses.sparse_softmax_cross_entropy(labels, logits)
            wanted = [v for v in tf.trainable_variables() if v.op.name in (
                'MobilenetV1/Conv2d_0/weights',
                'MobilenetV1/Conv2d_6_depthwise/depthwise_weights',
                'MobilenetV1/Conv2d_6_depthwise/BatchNorm/gamma')]
            assert len(wanted) == 3
            with tf.Session(config=_session_config()) as sess:
                sess.run(tf.global_variables_initializer())
                tf.train.Saver(float_variables).restore(sess,
                                                        float_v1_checkpoint)
                gradients.append(sess.run(tf.gradients(loss, wanted),
                                          {x: _images(64)}))
    # Batch-norm gradients over 4 images are ill-conditioned: the float
    # graph fed the same batch reordered moves them by up to 5% (max abs,
    # relative), at cosine 0.9994 and norm within 0.7%; here the rewrite
    # measured cosines 0.998 and norms within 1%.  Dropping the statistics'
    # Jacobian gave cosines of 0.1 to 0.5 and norms 2 to 15x.
    for expected, actual in zip(*gradients):
        cosine = np.sum(expected * actual) / (np.linalg.norm(expected) *
                                              np.linalg.norm(actual))
        assert cosine > 0.99
        assert abs(np.linalg.norm(actual) / np.linalg.norm(expected) - 1) \
            < 0.05


def test_qat_steps_move_the_ranges_and_respect_freeze_bn_delay(
        float_v1_checkpoint):
    with tf.Graph().as_default() as graph:
        x, logits = _build('mobilenet_v1', 64, True,
                           {'depth_multiplier': 0.25})
        float_variables = tf.global_variables()
        quantize.experimental_create_training_graph(
            graph, quant_delay=0, freeze_bn_delay=3)
        labels = tf.placeholder(tf.int32, [BATCH])
        loss = tf.losses.sparse_softmax_cross_entropy(labels, logits)
        with tf.control_dependencies(
                tf.get_collection(tf.GraphKeys.UPDATE_OPS)):
            train = tf.train.GradientDescentOptimizer(0.05).minimize(loss)
        by_name = {v.op.name: v for v in tf.global_variables()}
        act_max = by_name['MobilenetV1/MobilenetV1/Conv2d_3_pointwise/'
                          'act_quant/max']
        weights_min = by_name['MobilenetV1/MobilenetV1/Conv2d_0/'
                              'weights_quant/min']
        moving_mean = by_name['MobilenetV1/Conv2d_5_pointwise/BatchNorm/'
                              'moving_mean']
        with tf.Session(config=_session_config()) as sess:
            sess.run(tf.global_variables_initializer())
            tf.train.Saver(float_variables).restore(sess, float_v1_checkpoint)
            initial = sess.run([act_max, weights_min])
            means = []
            for step in range(5):
                sess.run(train, {x: _images(64, seed=step),
                                 labels: np.arange(BATCH) % 7})
                means.append(sess.run(moving_mean))
            final = sess.run([act_max, weights_min])
    assert initial[0] == 6.0 and initial[1] == -6.0
    assert final[0] != initial[0] and 0 < final[0]
    assert final[1] < 0 and final[1] != -6.0  # the folded weights' min
    # Batch norm statistics update on runs 1 and 2, then stay frozen.
    assert not np.allclose(means[0], means[1])
    assert np.array_equal(means[2], means[3])
    assert np.array_equal(means[3], means[4])


# v1 trains and evaluates in the tests above and in
# test_quantize_pipeline.py, v2 in test_quantize_tflite.py (QAT steps, then
# the eval graph exported); every v3 variant and EdgeTPU here.
NETWORKS = [
    ('mobilenet_v3_large', {'depth_multiplier': 0.35}),
    ('mobilenet_v3_small', {'depth_multiplier': 0.35}),
    ('mobilenet_v3_large_minimalistic', {'depth_multiplier': 0.35}),
    ('mobilenet_v3_small_minimalistic', {'depth_multiplier': 0.35}),
    ('mobilenet_edgetpu', {'depth_multiplier': 0.35}),
]


@pytest.mark.reads_no_shared
@pytest.mark.parametrize('network,kwargs', NETWORKS,
                         ids=[n for n, _ in NETWORKS])
def test_every_network_trains_and_evaluates_quantized(network, kwargs,
                                                      tmp_path):
    size = 32
    prefix = str(tmp_path / 'qat.ckpt')
    with tf.Graph().as_default() as graph:
        x, logits = _build(network, size, True, kwargs)
        quantize.create_training_graph(graph)
        loss = tf.reduce_mean(tf.square(logits))
        with tf.control_dependencies(
                tf.get_collection(tf.GraphKeys.UPDATE_OPS)):
            train = tf.train.GradientDescentOptimizer(0.01).minimize(loss)
        ranges = [v for v in tf.global_variables()
                  if v.op.name.endswith('act_quant/max')]
        assert ranges
        with tf.Session(config=_session_config()) as sess:
            sess.run(tf.global_variables_initializer())
            sess.run(train, {x: _images(size)})
            learned = sess.run(ranges)
            tf.train.Saver().save(sess, prefix, write_meta_graph=False)
    assert any(value != 6.0 for value in learned)
    with tf.Graph().as_default() as graph:
        x, logits = _build(network, size, False, kwargs)
        quantize.create_eval_graph(graph)
        assert [op for op in graph.get_operations()
                if op.type == 'FakeQuantWithMinMaxVars']
        with tf.Session(config=_session_config()) as sess:
            # Every variable of the eval graph is in the QAT checkpoint.
            tf.train.Saver().restore(sess, prefix)
            values = sess.run(logits, {x: _images(size)})
    assert values.shape == (BATCH, 7) and np.all(np.isfinite(values))


def test_moving_average_ranges_are_zero_debiased():
    """As TF1's assign_moving_average: the first step takes the batch's
    range whatever the initial value; later ones move by 1 - decay."""

    with tf.Graph().as_default():
        values = tf.placeholder(tf.float32, [3])
        quant_ops.MovingAvgQuantize(values, ema_decay=0.9,
                                    name_prefix='layer/act_quant')
        by_name = {v.op.name: v for v in tf.global_variables()}
        assert 'layer/act_quant/layer/act_quant/min/biased' in by_name
        assert 'layer/act_quant/layer/act_quant/max/local_step' in by_name
        low, high = by_name['layer/act_quant/min'], by_name[
            'layer/act_quant/max']
        output = tf.get_default_graph().get_tensor_by_name(
            'layer/act_quant/FakeQuantWithMinMaxVars:0')
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            sess.run(output, {values: [-1.0, 0.5, 2.0]})
            assert sess.run([low, high]) == pytest.approx([-1.0, 2.0],
                                                          rel=1e-6)
            sess.run(output, {values: [0.5, 1.0, 4.0]})
            # biased = 0.9 * 0.1 * m1 + 0.1 * m2, divided by 1 - 0.9 ** 2
            expected_high = (0.09 * 2.0 + 0.1 * 4.0) / 0.19
            expected_low = (0.09 * -1.0 + 0.1 * 0.0) / 0.19
            got_low, got_high = sess.run([low, high])
    assert got_high == pytest.approx(expected_high, rel=1e-6)
    assert got_low == pytest.approx(expected_low, rel=1e-6)


@pytest.mark.parametrize('rate', [1, 2])
def test_atrous_depthwise_folds_and_quantizes(rate):
    """A dilated depthwise convolution runs between SpaceToBatchND and
    BatchToSpaceND; the batch norm after it folds all the same."""
    images = np.random.RandomState(0).normal(0, 1, (2, 16, 16, 4))
    outputs = []
    for rewrite in (None, lambda g: quantize.experimental_create_eval_graph(
            g, quant_delay=10 ** 9)):
        with tf.Graph().as_default() as graph:
            x = tf.placeholder(tf.float32, [2, 16, 16, 4])
            with slim.arg_scope([slim.separable_conv2d],
                                normalizer_fn=slim.batch_norm,
                                normalizer_params={'is_training': False,
                                                   'scale': True}):
                # The Relu: float in both graphs, the folded layer's
                # output in the rewritten one.
                relu = slim.separable_conv2d(x, None, [3, 3], rate=rate,
                                             scope='atrous')
            if rewrite is not None:
                rewrite(graph)
                names = {op.name: op.type for op in graph.get_operations()}
                assert list(names.values()).count(
                    'FakeQuantWithMinMaxVars') == 2
                assert names['atrous/depthwise_Fold'] == \
                    'DepthwiseConv2dNative'
                assert relu.op.inputs[0].op.name == 'atrous/add_fold'
            with tf.Session(config=_session_config()) as sess:
                sess.run(tf.global_variables_initializer())
                for variable in tf.global_variables():
                    name = variable.op.name
                    rng = np.random.RandomState(len(name))  # per variable
                    if name.endswith(('moving_variance', 'gamma')):
                        variable.load(rng.uniform(0.5, 2, variable.shape),
                                      sess)
                    elif name.endswith(('moving_mean', 'beta',
                                        'depthwise_weights')):
                        variable.load(rng.normal(0, 1, variable.shape),
                                      sess)
                outputs.append(sess.run(relu, {x: images}))
    assert np.max(np.abs(outputs[0] - outputs[1])) < 1e-4


def _tiny_residual(is_training):
    """net/a: conv+BN+Relu6; net/b: conv+BN, added to the input, Relu6."""
    x = tf.placeholder(tf.float32, [2, 8, 8, 4])
    with tf.variable_scope('net'), slim.arg_scope(
            [slim.conv2d], normalizer_fn=slim.batch_norm,
            normalizer_params={'is_training': is_training, 'scale': True},
            activation_fn=tf.nn.relu6):
        a = slim.conv2d(x, 4, [3, 3], scope='a')
        b = slim.conv2d(a, 4, [1, 1], activation_fn=None, scope='b')
        with tf.name_scope('net/'):
            out = tf.nn.relu6(b + x, name='out')
    return x, out


def test_bypass_rules_scope_and_bit_widths():
    with tf.Graph().as_default() as graph:
        _tiny_residual(False)
        quantize.experimental_create_eval_graph(graph, weight_bits=4,
                                                activation_bits=6)
        names = sorted(v.op.name for v in tf.global_variables()
                       if '_quant/' in v.op.name)
        bits = {op.name: op.get_attr('num_bits')
                for op in graph.get_operations()
                if op.type == 'FakeQuantWithMinMaxVars'}
    # The add before a Relu6: its input quantized as the layer's
    # conv_quant, its output after the Relu6 as the parent's act_quant.
    assert names == sorted([
        'net/a/weights_quant/min', 'net/a/weights_quant/max',
        'net/a/act_quant/min', 'net/a/act_quant/max',
        'net/b/weights_quant/min', 'net/b/weights_quant/max',
        'net/b/conv_quant/min', 'net/b/conv_quant/max',
        'net/act_quant/min', 'net/act_quant/max'])
    assert {name: n for name, n in bits.items() if 'weights' in name} == {
        'net/a/weights_quant/FakeQuantWithMinMaxVars': 4,
        'net/b/weights_quant/FakeQuantWithMinMaxVars': 4}
    assert set(n for name, n in bits.items() if 'weights' not in name) == {6}

    with tf.Graph().as_default() as graph:
        _tiny_residual(False)
        quantize.experimental_create_eval_graph(graph, scope='net/a')
        names = {v.op.name for v in tf.global_variables()
                 if '_quant/' in v.op.name}
    assert names == {'net/a/weights_quant/min', 'net/a/weights_quant/max',
                     'net/a/act_quant/min', 'net/a/act_quant/max'}


def test_symmetric_ranges():
    with tf.Graph().as_default() as graph:
        x, out = _tiny_residual(True)
        quantize.experimental_create_training_graph(graph, symmetric=True)
        by_name = {v.op.name: v for v in tf.global_variables()}
        with tf.Session(config=_session_config()) as sess:
            sess.run(tf.global_variables_initializer())
            sess.run(out, {x: np.random.RandomState(0).normal(
                0, 1, (2, 8, 8, 4))})
            weights = sess.run([by_name['net/a/weights_quant/min'],
                                by_name['net/a/weights_quant/max']])
            activations = sess.run([by_name['net/a/act_quant/min'],
                                    by_name['net/a/act_quant/max']])
    # Weights (narrow range): exactly symmetric; activations: 128 levels
    # below zero for 127 above.
    assert weights[0] == -weights[1] and weights[1] > 0
    assert activations[0] == pytest.approx(-activations[1] * 256 / 254,
                                           rel=1e-5)
