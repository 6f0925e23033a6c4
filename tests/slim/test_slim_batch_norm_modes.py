"""`slim.batch_norm` in every mode tf-slim had, against tf-slim itself.

tf-slim's own `batch_norm` runs again on its fused and legacy code paths once
`slimnets.slim` has supplied the TensorFlow names they read, so those paths
are compared with it directly: variables (names, dtypes, shapes,
collections), what lands in `updates_collections`, outputs and the updated
moving statistics.  Its Keras-layer path (default `updates_collections`)
cannot run without `tf_keras`; those modes (16-bit inputs, partitioners,
`renorm`, `adjustment`) are checked against NumPy.  Also `stack`/`repeat`
scope names against tf-slim.
"""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
import tf_slim

from slimnets import slim
from slimnets.slim.repair import TF_SLIM_BATCH_NORM

EPSILON = 0.001


def random_input(shape, seed=0):
    return np.random.RandomState(seed).normal(1.5, 2.0, shape).astype(np.float32)


def build_and_run(function, shape, dtype=tf.float32, partitioner=None,
                  steps=2, feed_training=None, **kwargs):
    """Builds `function(inputs, **kwargs)` in scope 's', runs `steps` training
    steps (updates included) and reports everything observable.

    Returns:
      dict: 'variables' [(name, dtype, shape)], 'model', 'trainable',
      'regularization' counts, 'updates' [(type, op name)], 'outputs' and
      'statistics' (numpy, after the steps), 'output_dtype'.
    """
    x = random_input(shape)
    with tf.Graph().as_default():
        inputs = tf.constant(x, dtype=dtype)
        if feed_training is not None:
            kwargs['is_training'] = tf.placeholder_with_default(
                feed_training, [])
        with tf.variable_scope('s', partitioner=partitioner):
            outputs = function(inputs, **kwargs)
        collection = kwargs.get('updates_collections', tf.GraphKeys.UPDATE_OPS)
        updates = tf.get_collection(collection) if collection else []
        result = {
            'variables': [(v.op.name, v.dtype.base_dtype.name,
                           v.shape.as_list()) for v in tf.global_variables()],
            'model': sorted(v.op.name for v in tf.model_variables()),
            'trainable': sorted(v.op.name for v in tf.trainable_variables()),
            'regularization': len(tf.losses.get_regularization_losses()),
            'updates': [(type(u).__name__, u.op.name) for u in updates],
            'output_dtype': outputs.dtype.base_dtype.name,
        }
        with tf.control_dependencies(updates):
            step = tf.identity(outputs)
        statistics = {v.op.name: v for v in tf.global_variables()
                      if 'moving' in v.op.name or 'renorm' in v.op.name}
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            for _ in range(steps):
                got = sess.run(step)
            result['outputs'] = np.asarray(got, np.float32)
            result['statistics'] = sess.run(statistics)
    return result


def assert_same(ours, reference, atol):
    for key in ('variables', 'model', 'trainable', 'regularization',
                'updates', 'output_dtype'):
        assert ours[key] == reference[key], key
    np.testing.assert_allclose(ours['outputs'], reference['outputs'],
                               atol=atol, rtol=0)
    assert ours['statistics'].keys() == reference['statistics'].keys()
    for name, value in reference['statistics'].items():
        np.testing.assert_allclose(ours['statistics'][name], value,
                                   atol=atol, rtol=1e-5)


# Configurations on tf-slim's own (fused or legacy) code paths.
ORACLE_CASES = {
    'fused_rank2_float16': dict(shape=[6, 5], dtype=tf.float16, scale=True),
    'fused_custom_updates_float16': dict(
        shape=[4, 3, 3, 5], dtype=tf.float16, updates_collections='mine'),
    'fused_custom_updates_bfloat16': dict(
        shape=[4, 3, 3, 5], dtype=tf.bfloat16, updates_collections='mine'),
    'fused_nchw_zero_debias': dict(
        shape=[4, 5, 3, 3], data_format='NCHW', zero_debias_moving_mean=True,
        scale=True),
    'legacy_zero_debias': dict(
        shape=[4, 3, 3, 5], fused=False, zero_debias_moving_mean=True,
        scale=True),
    'legacy_custom_updates': dict(
        shape=[4, 3, 3, 5], fused=False, updates_collections='mine',
        scale=True),
    'legacy_float16_in_place': dict(
        shape=[8, 5], dtype=tf.float16, fused=False, updates_collections=None),
    'legacy_batch_weights_nchw': dict(
        shape=[4, 5, 3, 3], data_format='NCHW',
        batch_weights=[1.0, 0.5, 2.0, 1.0]),
    'legacy_rank3': dict(shape=[4, 3, 5], updates_collections=None,
                         scale=True),
    'fused_regularizers': dict(
        shape=[4, 3, 3, 5], updates_collections=None, scale=True,
        param_regularizers={'beta': tf_slim.l2_regularizer(0.1),
                            'gamma': tf_slim.l2_regularizer(0.2)}),
    'legacy_regularizers_dropped': dict(
        shape=[4, 3, 3, 5], fused=False, updates_collections=None, scale=True,
        param_regularizers={'beta': tf_slim.l2_regularizer(0.1)}),
    'fused_partitioned': dict(
        shape=[4, 3, 3, 6], updates_collections=None, scale=True,
        partitioner=tf.fixed_size_partitioner(2)),
    'fused_training_tensor': dict(
        shape=[4, 3, 3, 5], zero_debias_moving_mean=True, feed_training=True),
    'fused_inference_tensor': dict(
        shape=[4, 3, 3, 5], updates_collections='mine', feed_training=False),
}


@pytest.mark.parametrize('case', sorted(ORACLE_CASES))
def test_matches_tf_slim_on_its_own_paths(case):
    kwargs = dict(ORACLE_CASES[case])
    shape = kwargs.pop('shape')
    low_precision = kwargs.get('dtype') in (tf.float16, tf.bfloat16)
    reference = build_and_run(TF_SLIM_BATCH_NORM, shape, **kwargs)
    ours = build_and_run(slim.batch_norm, shape, **kwargs)
    assert_same(ours, reference, atol=0.05 if low_precision else 1e-5)


def test_zero_debias_model_variables_follow_the_path():
    legacy = build_and_run(slim.batch_norm, [4, 3, 3, 5], steps=1,
                           fused=False, zero_debias_moving_mean=True)
    fused = build_and_run(slim.batch_norm, [4, 3, 3, 5], steps=1,
                          zero_debias_moving_mean=True)
    # tf-slim's legacy path made its zero-debias variables model variables.
    assert len(legacy['model']) == 5 and len(fused['model']) == 3
    assert 's/BatchNorm/s/BatchNorm/moving_mean/biased' in legacy['model']


def numpy_batch_norm(x, mean, variance, offset=0.0, scale=1.0):
    return (x - mean) / np.sqrt(variance + EPSILON) * scale + offset


@pytest.mark.parametrize('fused', [True, False])
@pytest.mark.parametrize('dtype', [tf.float16, tf.bfloat16])
def test_layer_path_sixteen_bit_inputs_keep_float32_parameters(fused, dtype):
    shape = [4, 3, 3, 5]
    result = build_and_run(slim.batch_norm, shape, dtype=dtype, steps=1,
                           fused=fused, scale=True)
    assert {d for _, d, _ in result['variables']} == {'float32'}
    assert result['output_dtype'] == dtype.name
    x = random_input(shape).astype(dtype.as_numpy_dtype).astype(np.float32)
    mean, variance = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    expected = numpy_batch_norm(x, mean, variance)
    np.testing.assert_allclose(result['outputs'], expected,
                               atol=0.05 if dtype == tf.bfloat16 else 0.01)
    # The first update moves the statistics from (0, 1) by 0.001.
    count = x.size / shape[-1]
    batch_variance = variance * count / (count - 1) if fused else variance
    np.testing.assert_allclose(result['statistics']['s/BatchNorm/moving_mean'],
                               0.001 * mean, rtol=0.02, atol=1e-5)
    np.testing.assert_allclose(
        result['statistics']['s/BatchNorm/moving_variance'],
        0.999 + 0.001 * batch_variance, rtol=1e-3)


@pytest.mark.parametrize('fused', [True, False])
def test_layer_path_moving_statistics_are_never_partitioned(fused):
    result = build_and_run(slim.batch_norm, [4, 3, 3, 6], steps=1,
                           fused=fused, scale=True,
                           partitioner=tf.fixed_size_partitioner(2))
    names = [name for name, _, _ in result['variables']]
    assert names == ['s/BatchNorm/gamma/part_0', 's/BatchNorm/gamma/part_1',
                     's/BatchNorm/beta/part_0', 's/BatchNorm/beta/part_1',
                     's/BatchNorm/moving_mean', 's/BatchNorm/moving_variance']
    assert [u for _, u in result['updates']] == [
        's/BatchNorm/AssignMovingAvg/AssignSubVariableOp',
        's/BatchNorm/AssignMovingAvg_1/AssignSubVariableOp']


def test_layer_path_nchw_equals_nhwc():
    nhwc = build_and_run(slim.batch_norm, [4, 3, 3, 5], fused=False,
                         scale=True)
    x = np.transpose(random_input([4, 3, 3, 5]), [0, 3, 1, 2])
    with tf.Graph().as_default():
        outputs = slim.batch_norm(tf.constant(x), data_format='NCHW',
                                  fused=False, scale=True, scope='s/BatchNorm')
        with tf.control_dependencies(tf.get_collection(tf.GraphKeys.UPDATE_OPS)):
            step = tf.identity(outputs)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            for _ in range(2):
                got = sess.run(step)
            mean = sess.run(tf.global_variables()[2])
    np.testing.assert_allclose(np.transpose(got, [0, 2, 3, 1]),
                               nhwc['outputs'], atol=1e-5)
    np.testing.assert_allclose(mean,
                               nhwc['statistics']['s/BatchNorm/moving_mean'],
                               atol=1e-6)


def test_adjustment_applies_in_training_only():
    x = random_input([4, 3, 3, 2])
    shapes = []

    def adjustment(shape):
        shapes.append(shape)
        return tf.constant([2.0, 0.5]), tf.constant([1.0, -1.0])

    with tf.Graph().as_default():
        training = tf.placeholder(tf.bool, [])
        outputs = slim.batch_norm(tf.constant(x), scale=True, center=True,
                                  is_training=training, adjustment=adjustment,
                                  param_initializers={
                                      'gamma': tf.constant_initializer(3.0),
                                      'beta': tf.constant_initializer(0.25)})
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            trained = sess.run(outputs, {training: True})
            inferred = sess.run(outputs, {training: False})
    assert len(shapes) == 1 and shapes[0].shape.as_list() == [4]
    mean, variance = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    x_hat = (x - mean) / np.sqrt(variance + EPSILON)
    np.testing.assert_allclose(
        trained, (x_hat * [2.0, 0.5] + [1.0, -1.0]) * 3.0 + 0.25, atol=1e-4)
    # Inference: moving statistics, no adjustment.
    np.testing.assert_allclose(inferred, x / np.sqrt(1 + EPSILON) * 3.0 + 0.25,
                               atol=1e-4)


def numpy_renorm_steps(batches, decay, renorm_decay, clipping):
    """Batch renormalization as the Keras layer did it; gamma 1, beta 0.

    Returns:
      (outputs of the last step, dict of the statistics after all steps).
    """
    channels = batches[0].shape[-1]
    state = {'moving_mean': np.zeros(channels), 'moving_variance':
             np.ones(channels), 'moving_stddev': np.ones(channels),
             'renorm_mean': np.zeros(channels), 'renorm_stddev':
             np.ones(channels)}
    for x in batches:
        mean, variance = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
        stddev = np.sqrt(variance + EPSILON)
        renorm_stddev = np.maximum(state['renorm_stddev'], np.sqrt(EPSILON))
        r = stddev / renorm_stddev
        d = (mean - state['renorm_mean']) / renorm_stddev
        r = np.clip(r, clipping['rmin'], clipping['rmax'])
        d = np.clip(d, -clipping['dmax'], clipping['dmax'])
        outputs = (x - mean) / stddev * r + d
        for name, value in (('renorm_mean', mean), ('renorm_stddev', stddev)):
            state[name] -= (state[name] - value) * (1 - renorm_decay)
        state['moving_mean'] -= (state['moving_mean'] - mean) * (1 - decay)
        state['moving_stddev'] -= (state['moving_stddev'] - stddev) * (1 - decay)
        state['moving_variance'] = np.maximum(
            state['moving_stddev'] ** 2 - EPSILON, 0.0)
    return outputs, state


def test_renorm_matches_batch_renormalization():
    clipping = {'rmin': 0.8, 'rmax': 1.5, 'dmax': 0.3}
    batches = [random_input([4, 3, 3, 3], seed=s) * (1 + s) for s in range(3)]
    with tf.Graph().as_default():
        inputs = tf.placeholder(tf.float32, [4, 3, 3, 3])
        outputs = slim.batch_norm(inputs, decay=0.9, renorm=True,
                                  renorm_clipping=clipping, renorm_decay=0.5)
        names = [v.op.name for v in tf.global_variables()]
        updates = tf.get_collection(tf.GraphKeys.UPDATE_OPS)
        with tf.control_dependencies(updates):
            step = tf.identity(outputs)
        statistics = {v.op.name.split('/')[-1]: v
                      for v in tf.global_variables() if 'beta' not in v.op.name}
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            for x in batches:
                got = sess.run(step, {inputs: x})
            state = sess.run(statistics)
    assert names == ['BatchNorm/beta', 'BatchNorm/moving_mean',
                     'BatchNorm/moving_variance', 'BatchNorm/moving_stddev',
                     'BatchNorm/renorm_mean', 'BatchNorm/renorm_stddev']
    assert len(updates) == 2
    expected, expected_state = numpy_renorm_steps(batches, 0.9, 0.5, clipping)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    for name, value in expected_state.items():
        np.testing.assert_allclose(state[name], value, atol=1e-5, err_msg=name)


def test_renorm_errors_name_the_fix():
    with tf.Graph().as_default():
        with pytest.raises(ValueError, match='renorm_clipping'):
            slim.batch_norm(tf.zeros([2, 3]), renorm=True,
                            renorm_clipping={'rmax': 2.0, 'r': 1.0})
        with pytest.raises(ValueError, match='renorm is not supported'):
            slim.batch_norm(tf.zeros([2, 3]), renorm=True,
                            updates_collections=None)


@pytest.mark.parametrize('build', [
    lambda m: m.stack(tf.zeros([2, 5]), m.relu, [10, 20]),
    lambda m: m.stack(tf.zeros([2, 5]), m.fully_connected, [3, 4],
                      scope='fc'),
    lambda m: m.stack(tf.zeros([1, 8, 8, 3]), m.conv2d,
                      [(4, [3, 3]), (5, [1, 1], 2)]),
    lambda m: m.repeat(tf.zeros([1, 8, 8, 3]), 2, m.conv2d, 4, [3, 3]),
    lambda m: m.repeat(tf.zeros([1, 8, 8, 3]), 3, m.separable_conv2d, 4,
                       [3, 3], 1, scope='sep'),
    lambda m: m.stack(tf.zeros([2, 5]), m.linear, [3]),
    lambda m: m.stack(tf.zeros([2, 5]), m.relu6, [3]),
])
def test_stack_and_repeat_name_like_tf_slim(build):
    def names(module):
        with tf.Graph().as_default():
            output = build(module)
            return ([v.op.name for v in tf.global_variables()],
                    output.op.name)
    assert names(slim) == names(tf_slim)


@pytest.mark.parametrize('name,kwargs', [
    ('layer_norm', dict(begin_norm_axis=1, begin_params_axis=-1)),
    ('group_norm', dict(groups=2)),
    ('instance_norm', dict()),
])
@pytest.mark.parametrize('via_module', [False, True])
def test_other_normalizations_match_tf_slim(name, kwargs, via_module):
    """`slim.layer_norm` etc. (and `slim.normalization.group_norm`) are
    tf_slim's: same variables and outputs."""
    def run(module):
        source = module.normalization if via_module and hasattr(
            module.normalization, name) else module
        with tf.Graph().as_default():
            outputs = getattr(source, name)(
                tf.constant(random_input([2, 4, 4, 6])), **kwargs)
            names = [v.op.name for v in tf.global_variables()]
            with tf.Session() as sess:
                sess.run(tf.global_variables_initializer())
                return names, sess.run(outputs)

    ours, reference = run(slim), run(tf_slim)
    assert ours[0] == reference[0] and ours[0]
    np.testing.assert_array_equal(ours[1], reference[1])
