"""Conformance of `slimnets.slim`: each exported function built and run in a graph."""

import subprocess
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
import tf_slim

from slimnets import slim

REQUIRED_NAMES = [
    'arg_scope', 'add_arg_scope', 'current_arg_scope', 'conv2d',
    'convolution2d', 'separable_conv2d', 'fully_connected', 'batch_norm',
    'group_norm', 'layer_norm', 'dropout', 'avg_pool2d', 'max_pool2d',
    'flatten', 'softmax', 'l2_regularizer', 'xavier_initializer',
    'variance_scaling_initializer', 'get_model_variables',
    'get_variables_to_restore', 'get_variables', 'assign_from_checkpoint_fn',
    'model_variable', 'variable', 'losses',
]


def run(fetches, feed=None):
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        return sess.run(fetches, feed)


def ones_conv(**kwargs):
    return dict(weights_initializer=tf.ones_initializer(),
                biases_initializer=tf.constant_initializer(0.5),
                activation_fn=None, **kwargs)


def names(variables):
    return [v.op.name for v in variables]


def test_every_required_name_is_exported():
    missing = [n for n in REQUIRED_NAMES if not hasattr(slim, n)]
    assert not missing


class TestArgScope(object):

    def test_add_arg_scope_and_current_arg_scope(self):
        @slim.add_arg_scope
        def scaled(x, factor=1):
            return x * factor

        assert scaled(2) == 2
        with slim.arg_scope([scaled], factor=3) as scope:
            assert scaled(2) == 6
            assert scaled(2, factor=5) == 10
            assert slim.current_arg_scope() == scope
        assert slim.current_arg_scope() == {}
        with pytest.raises(ValueError):
            with slim.arg_scope([lambda x: x], factor=2):
                pass

    def test_wrapped_layers_share_tf_slim_keys(self):
        for name in ('conv2d', 'separable_conv2d', 'fully_connected',
                     'dropout', 'avg_pool2d', 'max_pool2d', 'group_norm',
                     'layer_norm', 'flatten', 'softmax'):
            ours, theirs = getattr(slim, name), getattr(tf_slim, name)
            assert slim.arg_scope_func_key(ours) == \
                slim.arg_scope_func_key(theirs), name

    def test_scope_on_tf_slim_function_reaches_wrapper(self):
        with tf.Graph().as_default():
            with slim.arg_scope([tf_slim.conv2d], num_outputs=7,
                                kernel_size=[1, 1]):
                outputs = slim.conv2d(tf.zeros([1, 3, 3, 2]))
            assert outputs.shape.as_list() == [1, 3, 3, 7]


class TestConvolutions(object):

    @pytest.mark.parametrize('function', ['conv2d', 'convolution2d'])
    def test_conv2d(self, function):
        with tf.Graph().as_default():
            x = tf.constant(np.arange(2 * 4 * 4 * 3, dtype=np.float32)
                            .reshape(2, 4, 4, 3))
            outputs = getattr(slim, function)(
                x, 5, [2, 2], padding='VALID',
                weights_regularizer=slim.l2_regularizer(0.1), scope='c',
                **ones_conv())
            assert names(tf.global_variables()) == ['c/weights', 'c/biases']
            assert tf.global_variables()[0].shape.as_list() == [2, 2, 3, 5]
            assert names(tf.model_variables()) == ['c/weights', 'c/biases']
            assert names(tf.trainable_variables()) == ['c/weights', 'c/biases']
            assert len(tf.get_collection(tf.GraphKeys.REGULARIZATION_LOSSES)) == 1
            result = run(outputs)
        values = np.arange(2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)
        window_sums = sum(values[:, i:i + 3, j:j + 3, :].sum(-1)
                          for i in (0, 1) for j in (0, 1))
        np.testing.assert_allclose(result[..., 0], window_sums + 0.5)
        assert result.shape == (2, 3, 3, 5)

    def test_separable_conv2d_depthwise_only(self):
        with tf.Graph().as_default():
            x = tf.ones([1, 5, 5, 2])
            outputs = slim.separable_conv2d(
                x, None, [3, 3], depth_multiplier=1, scope='dw',
                **ones_conv())
            assert names(tf.global_variables()) == ['dw/depthwise_weights',
                                                    'dw/biases']
            assert tf.global_variables()[0].shape.as_list() == [3, 3, 2, 1]
            result = run(outputs)
        assert result.shape == (1, 5, 5, 2)
        assert result[0, 2, 2, 0] == 9.5 and result[0, 0, 0, 0] == 4.5

    def test_separable_conv2d_with_pointwise(self):
        with tf.Graph().as_default():
            outputs = slim.separable_conv2d(tf.ones([1, 5, 5, 2]), 4, [3, 3],
                                            scope='sep', **ones_conv())
            assert names(tf.global_variables()) == [
                'sep/depthwise_weights', 'sep/pointwise_weights', 'sep/biases']
            result = run(outputs)
        assert result[0, 2, 2, 0] == 9 * 2 + 0.5

    def test_fully_connected(self):
        x = np.random.RandomState(0).randn(3, 4).astype(np.float32)
        with tf.Graph().as_default():
            outputs = slim.fully_connected(
                tf.constant(x), 2, activation_fn=tf.nn.relu, scope='fc',
                weights_initializer=tf.constant_initializer(0.5))
            assert names(tf.model_variables()) == ['fc/weights', 'fc/biases']
            result = run(outputs)
        np.testing.assert_allclose(
            result, np.maximum(x.sum(1, keepdims=True) * 0.5, 0).repeat(2, 1),
            rtol=1e-6)


class TestNormalizations(object):

    def test_group_norm(self):
        x = np.random.RandomState(0).randn(2, 3, 3, 4).astype(np.float32)
        with tf.Graph().as_default():
            outputs = slim.group_norm(tf.constant(x), groups=2, epsilon=1e-6)
            assert names(tf.global_variables()) == ['GroupNorm/beta',
                                                    'GroupNorm/gamma']
            result = run(outputs)
        grouped = x.reshape(2, 3, 3, 2, 2)
        mean = grouped.mean(axis=(1, 2, 4), keepdims=True)
        variance = grouped.var(axis=(1, 2, 4), keepdims=True)
        expected = ((grouped - mean) / np.sqrt(variance + 1e-6)).reshape(x.shape)
        np.testing.assert_allclose(result, expected, atol=1e-5)

    def test_layer_norm(self):
        x = np.random.RandomState(1).randn(3, 5).astype(np.float32)
        with tf.Graph().as_default():
            outputs = slim.layer_norm(tf.constant(x))
            assert names(tf.trainable_variables()) == ['LayerNorm/beta',
                                                       'LayerNorm/gamma']
            result = run(outputs)
        expected = (x - x.mean(1, keepdims=True)) / np.sqrt(
            x.var(1, keepdims=True) + 1e-12)
        np.testing.assert_allclose(result, expected, atol=1e-5)


class TestSimpleLayers(object):

    def test_dropout(self):
        with tf.Graph().as_default():
            x = tf.ones([1000])
            training = tf.placeholder(tf.bool, [])
            outputs = slim.dropout(x, keep_prob=0.5, is_training=training)
            frozen = slim.dropout(x, keep_prob=0.5, is_training=False)
            kept, identity, tensor_off = run(
                [outputs, frozen, outputs], {training: True})
            off = run(outputs, {training: False})
        assert set(np.unique(kept)) <= {0.0, 2.0} and 300 < kept.sum() / 2 < 700
        assert identity.tolist() == [1.0] * 1000
        assert off.tolist() == [1.0] * 1000
        assert tensor_off.shape == (1000,)

    def test_pools(self):
        x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
        with tf.Graph().as_default():
            average = slim.avg_pool2d(tf.constant(x), [2, 2])
            maximum = slim.max_pool2d(tf.constant(x), [2, 2])
            average_value, maximum_value = run([average, maximum])
        blocks = x.reshape(2, 2, 2, 2).transpose(0, 2, 1, 3).reshape(4, 4)
        np.testing.assert_allclose(average_value.ravel(), blocks.mean(1))
        np.testing.assert_allclose(maximum_value.ravel(), blocks.max(1))

    def test_flatten_and_softmax(self):
        logits = np.array([[1.0, 2.0, 3.0]], np.float32)
        with tf.Graph().as_default():
            flat = slim.flatten(tf.zeros([2, 3, 4, 5]))
            probabilities = slim.softmax(tf.constant(logits))
            assert flat.shape.as_list() == [2, 60]
            result = run(probabilities)
        expected = np.exp(logits) / np.exp(logits).sum()
        np.testing.assert_allclose(result, expected, rtol=1e-6)


class TestInitializersAndRegularizers(object):

    def test_l2_regularizer(self):
        with tf.Graph().as_default():
            penalty = slim.l2_regularizer(0.2)(tf.constant([1.0, 2.0, 3.0]))
            assert run(penalty) == pytest.approx(0.2 * 14 / 2)

    @pytest.mark.parametrize('make', [
        lambda: slim.xavier_initializer(),
        lambda: slim.variance_scaling_initializer(factor=1.0, mode='FAN_AVG',
                                                  uniform=True),
    ])
    def test_glorot_uniform_initializers(self, make):
        with tf.Graph().as_default():
            weights = slim.variable('w', [200, 300], initializer=make())
            value = run(weights)
        limit = np.sqrt(6.0 / 500)
        assert np.abs(value).max() <= limit
        assert value.std() == pytest.approx(limit / np.sqrt(3), rel=0.05)


class TestVariables(object):

    def test_variable_and_model_variable(self):
        with tf.Graph().as_default():
            slim.variable(
                'plain', [2], collections=[tf.GraphKeys.GLOBAL_VARIABLES, 'extra'])
            model = slim.model_variable('model', [3],
                                        initializer=tf.ones_initializer())
            assert names(tf.global_variables()) == ['plain', 'model']
            assert names(tf.model_variables()) == ['model']
            assert names(slim.get_model_variables()) == ['model']
            assert names(tf.get_collection('extra')) == ['plain']
            assert run(model).tolist() == [1, 1, 1]
            assert names(slim.get_variables()) == ['plain', 'model']
            assert names(slim.get_variables(suffix='model')) == ['model']

    def test_get_variables_to_restore(self):
        with tf.Graph().as_default():
            with tf.variable_scope('Net'):
                slim.model_variable('keep', [1])
                with tf.variable_scope('Logits'):
                    slim.model_variable('weights', [1])
            restore = slim.get_variables_to_restore(exclude=['Net/Logits'])
            assert names(restore) == ['Net/keep']
            assert names(slim.get_variables_to_restore(include=['Net/Logits'])) \
                == ['Net/Logits/weights']

    def test_assign_from_checkpoint_fn(self, tmp_path):
        path = str(tmp_path / 'model.ckpt')
        with tf.Graph().as_default():
            source = slim.model_variable('a', [2],
                                         initializer=tf.constant_initializer(7))
            with tf.Session() as sess:
                sess.run(tf.global_variables_initializer())
                tf.train.Saver().save(sess, path)
        with tf.Graph().as_default():
            target = slim.model_variable('a', [2])
            init_fn = slim.assign_from_checkpoint_fn(path,
                                                     slim.get_model_variables())
            with tf.Session() as sess:
                sess.run(tf.global_variables_initializer())
                init_fn(sess)
                assert sess.run(target).tolist() == [7, 7]
        del source


class TestLosses(object):

    def test_softmax_cross_entropy_and_totals(self):
        logits = np.array([[2.0, 0.5, -1.0]], np.float32)
        with tf.Graph().as_default():
            weights = slim.model_variable(
                'w', [2], initializer=tf.constant_initializer(1.0),
                regularizer=slim.l2_regularizer(1.0))
            loss = slim.losses.softmax_cross_entropy(
                tf.constant(logits), tf.constant([[0.0, 1.0, 0.0]]))
            assert slim.losses.get_losses() == [loss]
            regularization = slim.losses.get_regularization_losses()
            assert len(regularization) == 1
            total = slim.losses.get_total_loss()
            loss_value, total_value = run([loss, total])
        expected = -np.log(np.exp(0.5) / np.exp(logits).sum())
        assert loss_value == pytest.approx(expected, rel=1e-6)
        assert total_value == pytest.approx(expected + 1.0, rel=1e-6)
        del weights


class TestGraphMode(object):

    def test_eager_call_explains_graph_mode(self):
        assert tf.executing_eagerly()
        for build in (lambda: slim.conv2d(tf.zeros([1, 3, 3, 1]), 1, 1),
                      lambda: slim.batch_norm(tf.zeros([2, 3])),
                      lambda: slim.fully_connected(tf.zeros([1, 2]), 2)):
            with pytest.raises(slim.EagerExecutionError,
                               match=r'tf\.Graph\(\)\.as_default'):
                build()

    def test_wrap_function(self):
        def forward(x):
            net = slim.conv2d(x, 2, [1, 1], normalizer_fn=slim.batch_norm,
                              weights_initializer=tf.ones_initializer(),
                              normalizer_params={'is_training': False})
            return slim.softmax(slim.flatten(net))

        wrapped = tf.compat.v1.wrap_function(
            forward, [tf.TensorSpec([1, 2, 2, 1], tf.float32)])
        result = wrapped(tf.ones([1, 2, 2, 1])).numpy()
        assert result.shape == (1, 8)
        np.testing.assert_allclose(result.sum(), 1.0, rtol=1e-6)


def _run_python(code):
    completed = subprocess.run([sys.executable, '-c', code],
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout.strip().splitlines()[-1]


def test_no_tf_keras_after_building_every_layer():
    code = '''
import sys
import tensorflow.compat.v1 as tf
from slimnets import slim
with tf.Graph().as_default():
    x = tf.zeros([2, 8, 8, 4])
    for build in (
        lambda: slim.conv2d(x, 4, [3, 3], normalizer_fn=slim.batch_norm),
        lambda: slim.separable_conv2d(x, None, [3, 3], depth_multiplier=1),
        lambda: slim.batch_norm(x, is_training=tf.constant(True)),
        lambda: slim.batch_norm(x, updates_collections=None),
        lambda: slim.group_norm(x, groups=2), lambda: slim.layer_norm(x),
        lambda: slim.dropout(x), lambda: slim.avg_pool2d(x, [2, 2]),
        lambda: slim.max_pool2d(x, [2, 2]),
        lambda: slim.softmax(slim.fully_connected(slim.flatten(x), 3))):
        build()
print(sorted(m for m in sys.modules if m.split('.')[0] == 'tf_keras'))
'''
    assert _run_python(code) == '[]'


def test_repair_tf_slim_in_place_is_opt_in_and_idempotent():
    code = '''
import tensorflow.compat.v1 as tf
import tf_slim
import slimnets
from slimnets import slim
assert tf_slim.batch_norm is not slim.batch_norm, 'patched on import'
broken, reason = slim.tf_slim_is_broken()
assert broken, 'tf_slim works here: nothing to repair'
assert slim.repair_tf_slim() is True
assert slim.repair_tf_slim() is False
assert slim.is_repaired()
assert tf_slim.layers.batch_norm is slim.batch_norm
with tf.Graph().as_default():
    with tf_slim.arg_scope([tf_slim.batch_norm], scale=True):
        tf_slim.conv2d(tf.zeros([1, 4, 4, 2]), 3, [3, 3],
                       normalizer_fn=tf_slim.batch_norm)
    assert tf_slim.layers.utils.constant_value(tf.constant(True)) is True
    print(len(tf.global_variables()), slim.tf_slim_is_broken()[0])
'''
    assert _run_python(code) == '5 False'
