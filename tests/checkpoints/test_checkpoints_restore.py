"""restore / init_fn / inspect / diff / identify, and bad checkpoints."""

import os
import shutil

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from slimnets import checkpoints
from slimnets import mobilenet_v1
from slimnets import slim
from slimnets.mobilenet import mobilenet_v2

import reference


def build_v1(num_classes=10, scope='MobilenetV1', outer=None, depth=0.25):
    with slim.arg_scope(mobilenet_v1.mobilenet_v1_arg_scope(is_training=False)):
        images = tf.zeros([1, 64, 64, 3])
        if outer:
            with tf.variable_scope(outer):
                return mobilenet_v1.mobilenet_v1(
                    images, num_classes=num_classes, depth_multiplier=depth,
                    scope=scope)
        return mobilenet_v1.mobilenet_v1(images, num_classes=num_classes,
                                         depth_multiplier=depth, scope=scope)


@pytest.fixture(scope='module')
def v1_checkpoint(tmp_path_factory):
    """A v1 0.25 checkpoint with 10 classes, random values, and its values."""
    prefix = str(tmp_path_factory.mktemp('v1') / 'model.ckpt')
    with tf.Graph().as_default():
        build_v1()
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            for variable in tf.global_variables():
                variable.load(np.random.RandomState(len(variable.op.name))
                              .rand(*variable.shape.as_list()), sess)
            values = sess.run({v.op.name: v for v in tf.global_variables()})
            tf.train.Saver().save(sess, prefix, write_meta_graph=False)
    return prefix, values


@pytest.fixture(scope='module')
def ema_checkpoint(tmp_path_factory):
    """Variables plus ExponentialMovingAverage shadows that differ from them."""
    prefix = str(tmp_path_factory.mktemp('ema') / 'model.ckpt')
    with tf.Graph().as_default():
        build_v1()
        ema = tf.train.ExponentialMovingAverage(0.5)
        update = ema.apply(tf.model_variables())
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            for variable in tf.model_variables():
                variable.load(np.full(variable.shape.as_list(), 2.0), sess)
            sess.run(update)  # shadows: 0.5 * init + 0.5 * 2
            shadows = sess.run({v.op.name: ema.average(v)
                                for v in tf.model_variables()})
            tf.train.Saver().save(sess, prefix, write_meta_graph=False)
    return prefix, shadows


def graph_values(sess):
    return sess.run({v.op.name: v for v in tf.global_variables()})


class TestRestore(object):

    def test_plain_restore(self, v1_checkpoint):
        prefix, values = v1_checkpoint
        with tf.Graph().as_default():
            build_v1()
            with tf.Session() as sess:
                done = checkpoints.restore(sess, prefix)
                restored = graph_values(sess)
        assert len(done.assignments) == len(values) and not done.moving_average
        for name, value in values.items():
            np.testing.assert_array_equal(restored[name], value)

    def test_scope_remapping_into_feature_extractor(self, v1_checkpoint):
        prefix, values = v1_checkpoint
        with tf.Graph().as_default():
            build_v1(num_classes=None, outer='FeatureExtractor')
            with tf.Session() as sess:
                done = checkpoints.restore(sess, prefix)
                restored = graph_values(sess)
        assert done.scope_map == {'FeatureExtractor/MobilenetV1/':
                                  'MobilenetV1/'}
        name = 'MobilenetV1/Conv2d_3_pointwise/weights'
        np.testing.assert_array_equal(restored['FeatureExtractor/' + name],
                                      values[name])
        assert 'MobilenetV1/Logits/Conv2d_1c_1x1/weights' in done.unexpected

    def test_explicit_scope_map(self, v1_checkpoint):
        prefix, values = v1_checkpoint
        with tf.Graph().as_default():
            build_v1(scope='Backbone')
            with tf.Session() as sess:
                checkpoints.restore(sess, prefix,
                                    scope_map={'Backbone/': 'MobilenetV1/'})
                restored = graph_values(sess)
        np.testing.assert_array_equal(restored['Backbone/Conv2d_0/weights'],
                                      values['MobilenetV1/Conv2d_0/weights'])

    @pytest.mark.parametrize('moving_average', ['auto', True])
    def test_moving_average_shadows(self, ema_checkpoint, moving_average):
        prefix, shadows = ema_checkpoint
        with tf.Graph().as_default():
            build_v1()
            with tf.Session() as sess:
                done = checkpoints.restore(sess, prefix,
                                           moving_average=moving_average)
                restored = graph_values(sess)
        assert done.moving_average
        for name, shadow in shadows.items():
            np.testing.assert_allclose(restored[name], shadow)
        # The raw variables hold 2.0 everywhere; the shadows do not.
        assert not np.allclose(restored['MobilenetV1/Conv2d_0/weights'], 2.0)

    def test_moving_average_off_uses_raw_values(self, ema_checkpoint):
        prefix, _ = ema_checkpoint
        with tf.Graph().as_default():
            build_v1()
            with tf.Session() as sess:
                checkpoints.restore(sess, prefix, moving_average=False)
                restored = graph_values(sess)
        np.testing.assert_array_equal(
            restored['MobilenetV1/Conv2d_0/weights'],
            np.full([3, 3, 3, 8], 2.0, np.float32))

    def test_moving_average_required_but_absent(self, v1_checkpoint):
        with tf.Graph().as_default():
            build_v1()
            with tf.Session() as sess:
                with pytest.raises(checkpoints.CheckpointError,
                                   match='not in the checkpoint'):
                    checkpoints.restore(sess, v1_checkpoint[0],
                                        moving_average=True)

    def test_fine_tuning_excludes_logits(self, v1_checkpoint):
        prefix, values = v1_checkpoint
        with tf.Graph().as_default():
            build_v1(num_classes=5)
            with tf.Session() as sess:
                sess.run(tf.global_variables_initializer())
                with pytest.raises(checkpoints.CheckpointError,
                                   match='10 classes and the graph 5'):
                    checkpoints.restore(sess, prefix)
                done = checkpoints.restore(
                    sess, prefix, exclude=['MobilenetV1/Logits'])
                restored = graph_values(sess)
        assert [v.op.name for v in done.excluded] == [
            'MobilenetV1/Logits/Conv2d_1c_1x1/weights',
            'MobilenetV1/Logits/Conv2d_1c_1x1/biases']
        np.testing.assert_array_equal(
            restored['MobilenetV1/Conv2d_1_depthwise/depthwise_weights'],
            values['MobilenetV1/Conv2d_1_depthwise/depthwise_weights'])

    def test_all_or_nothing(self, v1_checkpoint):
        prefix, _ = v1_checkpoint
        with tf.Graph().as_default():
            build_v1(num_classes=1001)
            with tf.Session() as sess:
                sess.run(tf.global_variables_initializer())
                before = graph_values(sess)
                with pytest.raises(checkpoints.CheckpointError) as error:
                    checkpoints.restore(sess, prefix)
                after = graph_values(sess)
        message = str(error.value)
        assert 'nothing was assigned' in message
        assert 'MobilenetV1/Logits/Conv2d_1c_1x1/weights: graph [1, 1, 256, ' \
            '1001], checkpoint [1, 1, 256, 10]' in message
        for name, value in before.items():
            np.testing.assert_array_equal(after[name], value)

    def test_missing_variables_only_when_allowed(self, v1_checkpoint):
        prefix, _ = v1_checkpoint
        with tf.Graph().as_default():
            build_v1()
            extra = tf.get_variable('MobilenetV1/Extra/weights', [2],
                                    initializer=tf.ones_initializer())
            with tf.Session() as sess:
                sess.run(tf.global_variables_initializer())
                with pytest.raises(checkpoints.CheckpointError,
                                   match='MobilenetV1/Extra/weights'):
                    checkpoints.restore(sess, prefix)
                done = checkpoints.restore(sess, prefix, allow_missing=True)
                assert sess.run(extra).tolist() == [1, 1]
        assert [v.op.name for v in done.missing] == ['MobilenetV1/Extra/weights']

    def test_depth_multiplier_mismatch_is_explained(self, v1_checkpoint):
        with tf.Graph().as_default():
            build_v1(depth=0.5)
            with tf.Session() as sess:
                with pytest.raises(checkpoints.CheckpointError,
                                   match='depth_multiplier=0.25, the graph '
                                         'at 0.5'):
                    checkpoints.restore(sess, v1_checkpoint[0])

    def test_wrong_network_is_explained(self, v1_checkpoint):
        with tf.Graph().as_default():
            with slim.arg_scope(mobilenet_v2.training_scope(is_training=False)):
                mobilenet_v2.mobilenet(tf.zeros([1, 64, 64, 3]),
                                       depth_multiplier=0.35)
            with tf.Session() as sess:
                with pytest.raises(checkpoints.CheckpointError,
                                   match='holds mobilenet_v1'):
                    checkpoints.restore(sess, v1_checkpoint[0])

    def test_finegrain_head_mismatch_is_explained(self, tmp_path):
        prefix = str(tmp_path / 'fine.ckpt')
        with tf.Graph().as_default():
            with slim.arg_scope(mobilenet_v2.training_scope(is_training=False)):
                mobilenet_v2.mobilenet_v2_035(tf.zeros([1, 64, 64, 3]))
            with tf.Session() as sess:
                sess.run(tf.global_variables_initializer())
                tf.train.Saver().save(sess, prefix, write_meta_graph=False)
        with tf.Graph().as_default():
            with slim.arg_scope(mobilenet_v2.training_scope(is_training=False)):
                mobilenet_v2.mobilenet(tf.zeros([1, 64, 64, 3]),
                                       depth_multiplier=0.35)
            with tf.Session() as sess:
                with pytest.raises(checkpoints.CheckpointError,
                                   match='finegrain_classification_mode=True'):
                    checkpoints.restore(sess, prefix)

    def test_init_fn_validates_early(self, v1_checkpoint):
        prefix, values = v1_checkpoint
        with tf.Graph().as_default():
            build_v1()
            restore_fn = checkpoints.init_fn(prefix)
            tf.get_default_graph().finalize()
            with tf.Session() as sess:
                restore_fn(sess)
                restored = graph_values(sess)
        np.testing.assert_array_equal(restored['MobilenetV1/Conv2d_0/weights'],
                                      values['MobilenetV1/Conv2d_0/weights'])
        with tf.Graph().as_default():
            build_v1(num_classes=3)
            with pytest.raises(checkpoints.CheckpointError):
                checkpoints.init_fn(prefix)


class TestBadCheckpoints(object):

    @pytest.fixture()
    def copy(self, v1_checkpoint, tmp_path):
        source = os.path.dirname(v1_checkpoint[0])
        for name in os.listdir(source):
            shutil.copy(os.path.join(source, name), tmp_path / name)
        return str(tmp_path / 'model.ckpt')

    def _restore(self, prefix):
        with tf.Graph().as_default():
            build_v1()
            with tf.Session() as sess:
                sess.run(tf.global_variables_initializer())
                before = graph_values(sess)
                with pytest.raises(checkpoints.CheckpointError) as error:
                    checkpoints.restore(sess, prefix)
                after = graph_values(sess)
        for name, value in before.items():
            np.testing.assert_array_equal(after[name], value)
        return str(error.value)

    def test_missing_data(self, copy):
        os.remove(copy + '.data-00000-of-00001')
        assert 'no data' in self._restore(copy)

    def test_truncated_data(self, copy):
        data = copy + '.data-00000-of-00001'
        with open(data, 'r+b') as handle:
            handle.truncate(os.path.getsize(data) // 3)
        message = self._restore(copy)
        assert 'damaged' in message and 'truncated or corrupt' in message

    def test_missing_index(self, copy):
        os.remove(copy + '.index')
        assert 'has data but no index' in self._restore(copy)

    def test_not_a_checkpoint(self, tmp_path):
        path = tmp_path / 'frozen.pb'
        path.write_bytes(b'\x08\x01garbage')
        assert 'is not a TensorFlow checkpoint' in self._restore(str(path))

    def test_corrupt_index(self, copy):
        with open(copy + '.index', 'wb') as handle:
            handle.write(b'definitely not an index')
        assert 'index is damaged' in self._restore(copy)

    def test_nothing_there(self, tmp_path):
        assert 'No checkpoint at' in self._restore(str(tmp_path / 'nope.ckpt'))


# Fixture -> (network, variant, depth multiplier, finegrain, classes).
EXPECTED_IDENTITIES = {
    'reference/v1_025_112_small_input': ('mobilenet_v1', 0.25, False, 10),
    'reference/v1_025_128': ('mobilenet_v1', 0.25, False, 1001),
    'reference/v1_050_160_globalpool': ('mobilenet_v1', 0.5, False, 10),
    'reference/v1_base_os8_explicit': ('mobilenet_v1', 0.25, False, None),
    'reference/v1_base_ssd_conv11': ('mobilenet_v1', 0.25, False, None),
    'reference/v1_features_only': ('mobilenet_v1', 0.25, False, None),
    'reference/train_v1_025_128': ('mobilenet_v1', 0.25, False, 10),
    'reference/v2_035_96': ('mobilenet_v2', 0.35, True, 1001),
    'reference/v2_050_128_c10': ('mobilenet_v2', 0.5, True, 10),
    'reference/v2_base_os16_explicit': ('mobilenet_v2', 0.5, False, None),
    'reference/v2_base_os8_finegrain': ('mobilenet_v2', 0.35, True, None),
    'reference/v2_groupnorm_base': ('mobilenet_v2', 0.35, False, None),
    'reference/train_v2_035_96': ('mobilenet_v2', 0.35, False, 10),
    'reference/v3_edgetpu_050_96': ('mobilenet_edgetpu', 0.5, False, 10),
    'reference/v3_large_035_96_c10': ('mobilenet_v3_large', 0.35, False, 10),
    'reference/v3_large_detection_base': ('mobilenet_v3_large', 0.35, False,
                                          None),
    'reference/v3_large_min_050_96': ('mobilenet_v3_large_minimalistic', 0.5,
                                      False, 10),
    'reference/v3_small_050_96_c10': ('mobilenet_v3_small', 0.5, False, 10),
    'reference/v3_small_min_050_96': ('mobilenet_v3_small_minimalistic', 0.5,
                                      False, 10),
    'reference/train_v3_small_050_96': ('mobilenet_v3_small', 0.5, False, 10),
    'pretrained/mobilenet_v1/0.25_128': ('mobilenet_v1', 0.25, False, 1001),
    'pretrained/mobilenet_v1/0.75_192': ('mobilenet_v1', 0.75, False, 1001),
    'pretrained/mobilenet_v2/1.0_224': ('mobilenet_v2', 1.0, False, 1001),
    'pretrained/mobilenet_v3_small/1.0_224': ('mobilenet_v3_small', 1.0,
                                              False, 1001),
}


def test_every_fixture_checkpoint_is_covered():
    fixtures = os.path.join(reference.SHARED, 'fixtures')
    reference.require(fixtures)
    found = set()
    for root, _, files in os.walk(fixtures):
        if 'model.ckpt.index' in files:
            found.add(os.path.relpath(root, fixtures))
    assert found == set(EXPECTED_IDENTITIES)


@pytest.mark.parametrize('fixture', sorted(EXPECTED_IDENTITIES))
def test_inspect_identifies_every_fixture(fixture):
    prefix = os.path.join(reference.SHARED, 'fixtures', fixture, 'model.ckpt')
    reference.require(prefix + '.index')
    info = checkpoints.inspect(prefix)
    network, depth, finegrain, classes = EXPECTED_IDENTITIES[fixture]
    identity = info.identity
    assert (identity.network, identity.depth_multiplier, identity.finegrain,
            identity.num_classes) == (network, depth, finegrain, classes)
    assert identity.normalizer == ('group_norm' if 'groupnorm' in fixture
                                   else 'batch_norm')
    if fixture.endswith('detection_base'):
        assert identity.variant == 'V3_LARGE_DETECTION'
    if fixture == 'pretrained/mobilenet_v1/0.75_192':
        assert 'mobilenet_v1_0.75_192' in identity.catalogue_names
    assert 'variables:' in checkpoints.format_info(info)


def test_identify_shadows_and_quantization():
    shapes = {'MobilenetV1/Conv2d_0/weights': [3, 3, 3, 32],
              'MobilenetV1/Conv2d_0/weights/ExponentialMovingAverage':
                  [3, 3, 3, 32],
              'MobilenetV1/Conv2d_0/act_quant/min': []}
    identity = checkpoints.identify(shapes)
    assert identity.moving_average_shadows and identity.quantized
    assert identity.depth_multiplier == 1.0
    assert checkpoints.identify({'foo/bar': [1]}).family is None


def test_diff_reports_each_kind(v1_checkpoint):
    with tf.Graph().as_default():
        build_v1(num_classes=7)
        tf.get_variable('MobilenetV1/Extra/weights', [2])
        result = checkpoints.diff(v1_checkpoint[0])
    assert result.missing == ['MobilenetV1/Extra/weights']
    assert [m[0] for m in result.mismatched] == [
        'MobilenetV1/Logits/Conv2d_1c_1x1/weights',
        'MobilenetV1/Logits/Conv2d_1c_1x1/biases']
    assert 'classes' in result.mismatched[0][4]
    assert len(result.matched) == 135
    report = checkpoints.format_diff(result)
    assert 'missing     MobilenetV1/Extra/weights' in report
