"""`slimnets.slim.batch_norm` against a NumPy batch norm, and its semantics."""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
import tf_slim

from slimnets import slim

EPSILON = 0.001


def numpy_batch_norm(x, mean, variance, beta=0.0, gamma=1.0, epsilon=EPSILON):
    return (x - mean) / np.sqrt(variance + epsilon) * gamma + beta


def channel_moments(x, axes):
    """(mean, biased variance, unbiased variance) over `axes`."""
    count = np.prod([x.shape[a] for a in axes])
    mean = x.mean(axis=axes)
    variance = x.var(axis=axes)
    return mean, variance, variance * count / (count - 1)


def random_input(shape, seed=0):
    return np.random.RandomState(seed).normal(1.5, 2.0, shape).astype(np.float32)


def fill(sess, variable, value):
    variable.load(np.asarray(value, np.float32), sess)


def variables_by_name():
    return {v.op.name: v for v in tf.global_variables()}


class TestVariables(object):

    def test_names_shapes_collections_and_trainability(self):
        with tf.Graph().as_default():
            slim.batch_norm(tf.zeros([2, 4, 4, 5]), scale=True)
            names = [v.op.name for v in tf.global_variables()]
            # The reference built this configuration with a Keras layer,
            # which created gamma before beta.
            assert names == ['BatchNorm/gamma', 'BatchNorm/beta',
                             'BatchNorm/moving_mean',
                             'BatchNorm/moving_variance']
            assert all(v.shape.as_list() == [5] for v in tf.global_variables())
            assert [v.op.name for v in tf.trainable_variables()] == [
                'BatchNorm/gamma', 'BatchNorm/beta']
            assert [v.op.name for v in tf.model_variables()] == names

    @pytest.mark.parametrize('kwargs', [
        dict(updates_collections=None),
        dict(zero_debias_moving_mean=True),
    ])
    def test_slim_paths_create_beta_first(self, kwargs):
        with tf.Graph().as_default():
            slim.batch_norm(tf.zeros([2, 4, 4, 5]), scale=True, **kwargs)
            names = [v.op.name for v in tf.global_variables()][:2]
            assert names == ['BatchNorm/beta', 'BatchNorm/gamma']

    def test_rank_two_input_uses_beta_first(self):
        with tf.Graph().as_default():
            slim.batch_norm(tf.zeros([2, 5]), scale=True)
            assert [v.op.name for v in tf.global_variables()][:2] == [
                'BatchNorm/beta', 'BatchNorm/gamma']

    def test_no_center_no_scale(self):
        with tf.Graph().as_default():
            slim.batch_norm(tf.zeros([2, 5]), center=False, scale=False)
            assert [v.op.name for v in tf.global_variables()] == [
                'BatchNorm/moving_mean', 'BatchNorm/moving_variance']
            assert not tf.trainable_variables()

    def test_not_trainable(self):
        with tf.Graph().as_default():
            slim.batch_norm(tf.zeros([2, 5]), scale=True, trainable=False)
            assert not tf.trainable_variables()
            assert len(tf.model_variables()) == 4

    def test_scope_and_reuse(self):
        with tf.Graph().as_default():
            slim.batch_norm(tf.zeros([2, 5]), scope='bn')
            slim.batch_norm(tf.ones([2, 5]), scope='bn', reuse=True)
            assert [v.op.name for v in tf.global_variables()] == [
                'bn/beta', 'bn/moving_mean', 'bn/moving_variance']
            with pytest.raises(ValueError):
                slim.batch_norm(tf.ones([2, 5]), scope='bn')

    def test_variables_and_outputs_collections(self):
        with tf.Graph().as_default():
            outputs = slim.batch_norm(
                tf.zeros([2, 5]), scale=True,
                variables_collections={'beta': ['betas'],
                                       'moving_mean': ['stats']},
                outputs_collections='outs')
            assert [v.op.name for v in tf.get_collection('betas')] == [
                'BatchNorm/beta']
            assert [v.op.name for v in tf.get_collection('stats')] == [
                'BatchNorm/moving_mean']
            assert tf.get_collection('outs') == [outputs]
            assert outputs.aliases == ['BatchNorm']

    def test_param_initializers_and_regularizers(self):
        with tf.Graph().as_default():
            slim.batch_norm(
                tf.zeros([2, 3]), scale=True,
                param_initializers={'gamma': tf.constant_initializer(2.0),
                                    'moving_variance':
                                        tf.constant_initializer(4.0)},
                param_regularizers={'gamma': slim.l2_regularizer(0.5),
                                    'beta': slim.l2_regularizer(1.0)})
            losses = tf.get_collection(tf.GraphKeys.REGULARIZATION_LOSSES)
            assert len(losses) == 2
            with tf.Session() as sess:
                sess.run(tf.global_variables_initializer())
                found = sess.run(variables_by_name())
                # l2(0.5) of gamma = 0.5 * sum(4) / 2 = 3; beta is zero.
                assert sess.run(tf.add_n(losses)) == pytest.approx(3.0)
        np.testing.assert_allclose(found['BatchNorm/gamma'], [2, 2, 2])
        np.testing.assert_allclose(found['BatchNorm/moving_variance'], [4, 4, 4])


class TestNumerics(object):
    """Outputs and moving statistics equal NumPy's to 1e-5."""

    @pytest.mark.parametrize('fused', [None, True, False])
    @pytest.mark.parametrize('data_format', ['NHWC', 'NCHW'])
    def test_inference_uses_moving_statistics(self, fused, data_format):
        x = random_input([3, 4, 5, 6])
        shape = x.shape if data_format == 'NHWC' else (3, 6, 4, 5)
        channels = 6
        rng = np.random.RandomState(1)
        stats = dict(mean=rng.randn(channels), variance=rng.rand(channels) + .5,
                     beta=rng.randn(channels), gamma=rng.rand(channels) + .5)
        data = x if data_format == 'NHWC' else x.transpose(0, 3, 1, 2)
        with tf.Graph().as_default():
            outputs = slim.batch_norm(tf.constant(data.reshape(shape)),
                                      scale=True, is_training=False,
                                      fused=fused, data_format=data_format)
            assert not tf.get_collection(tf.GraphKeys.UPDATE_OPS)
            v = variables_by_name()
            with tf.Session() as sess:
                for name in ('mean', 'variance'):
                    fill(sess, v['BatchNorm/moving_' + name], stats[name])
                fill(sess, v['BatchNorm/beta'], stats['beta'])
                fill(sess, v['BatchNorm/gamma'], stats['gamma'])
                result = sess.run(outputs)
        if data_format == 'NCHW':
            result = result.transpose(0, 2, 3, 1)
        expected = numpy_batch_norm(x, stats['mean'], stats['variance'],
                                    stats['beta'], stats['gamma'])
        np.testing.assert_allclose(result, expected, atol=1e-5, rtol=1e-5)

    @pytest.mark.parametrize('fused,unbiased', [(None, True), (True, True),
                                                (False, False)])
    @pytest.mark.parametrize('data_format', ['NHWC', 'NCHW'])
    def test_training_normalizes_by_batch_and_updates(self, fused, unbiased,
                                                      data_format):
        x = random_input([4, 3, 5, 2])
        data = x if data_format == 'NHWC' else x.transpose(0, 3, 1, 2)
        decay = 0.9
        with tf.Graph().as_default():
            outputs = slim.batch_norm(tf.constant(data), decay=decay,
                                      is_training=True, fused=fused,
                                      data_format=data_format)
            updates = tf.get_collection(tf.GraphKeys.UPDATE_OPS)
            assert len(updates) == 2
            v = variables_by_name()
            with tf.Session() as sess:
                sess.run(tf.global_variables_initializer())
                result = sess.run(outputs)
                # The moving statistics move only when the updates run.
                assert sess.run(v['BatchNorm/moving_mean']).tolist() == [0, 0]
                sess.run(updates)
                moving_mean, moving_variance = sess.run(
                    [v['BatchNorm/moving_mean'], v['BatchNorm/moving_variance']])
        if data_format == 'NCHW':
            result = result.transpose(0, 2, 3, 1)
        mean, biased, corrected = channel_moments(x, (0, 1, 2))
        np.testing.assert_allclose(result, numpy_batch_norm(x, mean, biased),
                                   atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(moving_mean, (1 - decay) * mean, rtol=1e-5)
        used = corrected if unbiased else biased
        np.testing.assert_allclose(moving_variance,
                                   decay + (1 - decay) * used, rtol=1e-5)

    def test_rank_two_training(self):
        x = random_input([6, 3])
        with tf.Graph().as_default():
            outputs = slim.batch_norm(tf.constant(x), decay=0.5, scale=True,
                                      is_training=True)
            updates = tf.get_collection(tf.GraphKeys.UPDATE_OPS)
            v = variables_by_name()
            with tf.Session() as sess:
                sess.run(tf.global_variables_initializer())
                result = sess.run(outputs)
                sess.run(updates)
                moving_variance = sess.run(v['BatchNorm/moving_variance'])
        mean, biased, corrected = channel_moments(x, (0,))
        np.testing.assert_allclose(result, numpy_batch_norm(x, mean, biased),
                                   atol=1e-5)
        np.testing.assert_allclose(moving_variance, 0.5 + 0.5 * corrected,
                                   rtol=1e-5)

    def test_rank_three_input(self):
        x = random_input([2, 5, 3])
        with tf.Graph().as_default():
            outputs = slim.batch_norm(tf.constant(x), is_training=True)
            with tf.Session() as sess:
                sess.run(tf.global_variables_initializer())
                result = sess.run(outputs)
        mean, biased, _ = channel_moments(x, (0, 1))
        np.testing.assert_allclose(result, numpy_batch_norm(x, mean, biased),
                                   atol=1e-5)

    def test_updates_collections_none_updates_in_place(self):
        x = random_input([4, 2, 2, 3])
        with tf.Graph().as_default():
            outputs = slim.batch_norm(tf.constant(x), decay=0.5,
                                      updates_collections=None,
                                      is_training=True)
            assert not tf.get_collection(tf.GraphKeys.UPDATE_OPS)
            v = variables_by_name()
            with tf.Session() as sess:
                sess.run(tf.global_variables_initializer())
                sess.run(outputs)
                moving_mean = sess.run(v['BatchNorm/moving_mean'])
        mean, _, _ = channel_moments(x, (0, 1, 2))
        np.testing.assert_allclose(moving_mean, 0.5 * mean, rtol=1e-5)

    def test_custom_updates_collection(self):
        with tf.Graph().as_default():
            slim.batch_norm(tf.zeros([4, 3]), updates_collections='mine',
                            is_training=True)
            assert len(tf.get_collection('mine')) == 2
            assert not tf.get_collection(tf.GraphKeys.UPDATE_OPS)

    @pytest.mark.parametrize('updates_collections', [tf.GraphKeys.UPDATE_OPS,
                                                     None])
    def test_is_training_tensor(self, updates_collections):
        x = random_input([4, 2, 2, 3])
        with tf.Graph().as_default():
            training = tf.placeholder(tf.bool, [])
            outputs = slim.batch_norm(tf.constant(x), decay=0.5,
                                      is_training=training,
                                      updates_collections=updates_collections)
            updates = tf.get_collection(tf.GraphKeys.UPDATE_OPS)
            v = variables_by_name()
            with tf.Session() as sess:
                sess.run(tf.global_variables_initializer())
                inference = sess.run(outputs, {training: False})
                sess.run(updates, {training: False})
                # Inference mode leaves the statistics where they were.
                assert sess.run(v['BatchNorm/moving_mean']).tolist() == [0] * 3
                trained = sess.run(outputs, {training: True})
                sess.run(updates, {training: True})
                moving_mean = sess.run(v['BatchNorm/moving_mean'])
        mean, biased, _ = channel_moments(x, (0, 1, 2))
        np.testing.assert_allclose(inference, numpy_batch_norm(x, 0.0, 1.0),
                                   atol=1e-5)
        np.testing.assert_allclose(trained, numpy_batch_norm(x, mean, biased),
                                   atol=1e-5)
        # Exactly one training-mode update happened in either mode: by the
        # update ops, or in place when the training output was computed.
        np.testing.assert_allclose(moving_mean, 0.5 * mean, rtol=1e-5)

    def test_zero_debias_moving_mean(self):
        x = random_input([4, 2, 2, 3])
        with tf.Graph().as_default():
            slim.batch_norm(tf.constant(x), decay=0.9, is_training=True,
                            zero_debias_moving_mean=True)
            updates = tf.get_collection(tf.GraphKeys.UPDATE_OPS)
            v = variables_by_name()
            with tf.Session() as sess:
                sess.run(tf.global_variables_initializer())
                sess.run(updates)
                moving_mean = sess.run(v['BatchNorm/moving_mean'])
        # After one debiased step the moving mean is the batch mean itself.
        np.testing.assert_allclose(moving_mean, x.mean(axis=(0, 1, 2)),
                                   rtol=1e-5)

    def test_batch_weights(self):
        x = random_input([4, 3])
        weights = np.array([1.0, 0.0, 2.0, 1.0], np.float32)
        with tf.Graph().as_default():
            outputs = slim.batch_norm(tf.constant(x), is_training=True,
                                      batch_weights=tf.constant(weights))
            names = [v.op.name for v in tf.global_variables()]
            with tf.Session() as sess:
                sess.run(tf.global_variables_initializer())
                result = sess.run(outputs)
        assert names[0] == 'BatchNorm/beta'
        w = weights[:, None] / weights.sum()
        mean = (w * x).sum(axis=0)
        variance = (w * (x - mean) ** 2).sum(axis=0)
        np.testing.assert_allclose(result, numpy_batch_norm(x, mean, variance),
                                   atol=1e-5)

    def test_activation_fn(self):
        with tf.Graph().as_default():
            outputs = slim.batch_norm(tf.constant(random_input([4, 3])),
                                      activation_fn=tf.nn.relu)
            with tf.Session() as sess:
                sess.run(tf.global_variables_initializer())
                assert sess.run(outputs).min() >= 0.0


class TestErrors(object):

    def test_bad_data_format(self):
        with tf.Graph().as_default():
            with pytest.raises(ValueError, match='data_format'):
                slim.batch_norm(tf.zeros([2, 3]), data_format='NDHWC')

    def test_unknown_channels(self):
        with tf.Graph().as_default():
            with pytest.raises(ValueError, match='channel'):
                slim.batch_norm(tf.placeholder(tf.float32, [2, None]))


class TestArgScopeIdentity(object):

    def test_tf_slim_scope_configures_slimnets(self):
        with tf.Graph().as_default():
            with slim.arg_scope([tf_slim.batch_norm], decay=0.5, scale=True,
                                updates_collections=None):
                outputs = slim.batch_norm(tf.constant(random_input([4, 3])),
                                          is_training=True)
            names = [v.op.name for v in tf.global_variables()]
            assert 'BatchNorm/gamma' in names
            v = variables_by_name()
            with tf.Session() as sess:
                sess.run(tf.global_variables_initializer())
                sess.run(outputs)
                # updates_collections=None reached the slimnets layer: the
                # output updated the statistics in place, by decay=0.5.
                moving_mean = sess.run(v['BatchNorm/moving_mean'])
        np.testing.assert_allclose(
            moving_mean, 0.5 * random_input([4, 3]).mean(axis=0), rtol=1e-5)

    def test_slimnets_scope_is_tf_slims(self):
        with slim.arg_scope([slim.batch_norm], decay=0.25) as scope:
            assert scope[slim.arg_scope_func_key(tf_slim.batch_norm)] == {
                'decay': 0.25}
        assert slim.arg_scope_func_key(slim.batch_norm) == \
            slim.arg_scope_func_key(tf_slim.batch_norm)

    def test_normalizer_fn_of_conv2d(self):
        with tf.Graph().as_default():
            with slim.arg_scope([slim.batch_norm], scale=True):
                slim.conv2d(tf.zeros([1, 4, 4, 2]), 3, [3, 3],
                            normalizer_fn=slim.batch_norm, scope='Conv')
            assert [v.op.name for v in tf.global_variables()] == [
                'Conv/weights', 'Conv/BatchNorm/gamma', 'Conv/BatchNorm/beta',
                'Conv/BatchNorm/moving_mean', 'Conv/BatchNorm/moving_variance']
