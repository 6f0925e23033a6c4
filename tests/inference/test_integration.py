"""SSD-style and DeepLab-style graphs around slimnets backbones: restore the
backbone from a classification checkpoint, run forward, train a few steps
on a tiny synthetic task and watch the loss and the batch-norm statistics."""

import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from slimnets import checkpoints
from slimnets import features
from slimnets import slim

import reference

STEPS = 12


def _train(loss, backbone_scope, checkpoint, feed):
    """Restores the backbone, trains STEPS steps; returns what changed."""
    global_step = tf.train.get_or_create_global_step()
    update_ops = tf.get_collection(tf.GraphKeys.UPDATE_OPS)
    assert update_ops
    with tf.control_dependencies(update_ops):
        train_op = tf.train.MomentumOptimizer(0.01, 0.9).minimize(
            loss, global_step=global_step)
    backbone = tf.model_variables(backbone_scope)
    moving_mean = [v for v in backbone if v.op.name.endswith('moving_mean')][0]
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        plan = checkpoints.restore(sess, checkpoint, var_list=backbone)
        restored_mean = sess.run(moving_mean)
        losses = [sess.run([train_op, loss], feed)[1] for _ in range(STEPS)]
        final_mean = sess.run(moving_mean)
    return plan, losses, restored_mean, final_mean


def _synthetic_images(rng, count, size):
    """Images in [-1, 1] with a bright square whose place is the target."""
    images = rng.uniform(-1, -0.5, [count, size, size, 3]).astype(np.float32)
    corners = rng.randint(0, size // 2, [count, 2])
    for image, (y, x) in zip(images, corners):
        image[y:y + size // 2, x:x + size // 2] = 0.9
    return images


def test_ssd_style_graph():
    checkpoint = os.path.join(reference.fixture_dir('v1_025_128'),
                              'model.ckpt')
    rng = np.random.RandomState(0)
    images_value = _synthetic_images(rng, 4, 128)
    num_anchors, num_classes = 3, 4
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        images = tf.placeholder(tf.float32, [4, 128, 128, 3])
        with tf.variable_scope('FeatureExtractor'):
            maps = features.features(images, 'mobilenet_v1',
                                     depth_multiplier=0.25, min_depth=8,
                                     is_training=True)
            feature_maps = list(maps.values())
            net = feature_maps[-1]
            with slim.arg_scope([slim.conv2d], normalizer_fn=slim.batch_norm,
                                normalizer_params={'is_training': True},
                                activation_fn=tf.nn.relu6):
                for index, depth in enumerate((128, 64)):
                    net = slim.conv2d(net, depth // 2, [1, 1],
                                      scope='extra_%d_1x1' % index)
                    net = slim.conv2d(net, depth, [3, 3], stride=2,
                                      scope='extra_%d_3x3' % index)
                    feature_maps.append(net)
        assert [m.shape.as_list()[1:3] for m in feature_maps] == [
            [8, 8], [4, 4], [2, 2], [1, 1]]
        losses = []
        with tf.variable_scope('BoxPredictor'):
            for index, feature_map in enumerate(feature_maps):
                boxes = slim.conv2d(feature_map, num_anchors * 4, [3, 3],
                                    activation_fn=None, scope='box_%d' % index)
                classes = slim.conv2d(feature_map, num_anchors * num_classes,
                                      [3, 3], activation_fn=None,
                                      scope='class_%d' % index)
                shape = feature_map.shape.as_list()[:3]
                box_targets = tf.constant(rng.uniform(
                    -1, 1, shape + [num_anchors * 4]).astype(np.float32))
                class_targets = tf.constant(rng.randint(
                    0, num_classes, shape + [num_anchors]))
                losses.append(tf.losses.huber_loss(box_targets, boxes))
                losses.append(tf.losses.sparse_softmax_cross_entropy(
                    class_targets, tf.reshape(classes, shape + [
                        num_anchors, num_classes])))
        loss = tf.add_n(losses)
        plan, values, restored, final = _train(
            loss, 'FeatureExtractor/MobilenetV1', checkpoint,
            {images: images_value})
    assert plan.scope_map == {'FeatureExtractor/MobilenetV1/': 'MobilenetV1/'}
    assert len(plan.assignments) == 135  # all but the classifier's logits
    assert all(np.isfinite(values))
    assert np.mean(values[-3:]) < np.mean(values[:3])
    assert np.abs(final - restored).max() > 1e-4


@pytest.mark.parametrize('output_stride', [16, 8])
def test_deeplab_style_graph(output_stride):
    checkpoint = os.path.join(reference.fixture_dir('v2_035_96'),
                              'model.ckpt')
    rng = np.random.RandomState(1)
    size = 65
    images_value = _synthetic_images(rng, 2, size)
    labels_value = (images_value[..., 0] > 0).astype(np.int32)
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        images = tf.placeholder(tf.float32, [2, size, size, 3])
        labels = tf.placeholder(tf.int32, [2, size, size])
        maps = features.features(images, 'mobilenet_v2_deeplab',
                                 depth_multiplier=0.35, min_depth=8,
                                 divisible_by=8, output_stride=output_stride,
                                 is_training=True)
        encoder = maps['layer_18']
        feature_size = -(-size // output_stride)
        assert encoder.shape.as_list() == [2, feature_size, feature_size, 112]
        with slim.arg_scope([slim.conv2d], normalizer_fn=slim.batch_norm,
                            normalizer_params={'is_training': True},
                            activation_fn=tf.nn.relu):
            branches = [
                slim.conv2d(encoder, 32, [1, 1], scope='aspp0'),
                slim.conv2d(encoder, 32, [3, 3], rate=2, scope='aspp1'),
            ]
            pooled = tf.reduce_mean(encoder, [1, 2], keepdims=True)
            pooled = slim.conv2d(pooled, 32, [1, 1], scope='image_pooling')
            branches.append(tf.image.resize_bilinear(
                pooled, [feature_size, feature_size], align_corners=True))
            net = slim.conv2d(tf.concat(branches, 3), 32, [1, 1],
                              scope='concat_projection')
        logits = slim.conv2d(net, 2, [1, 1], activation_fn=None,
                             scope='logits')
        upsampled = tf.image.resize_bilinear(logits, [size, size],
                                             align_corners=True)
        loss = tf.losses.sparse_softmax_cross_entropy(labels, upsampled)
        plan, values, restored, final = _train(
            loss, 'MobilenetV2', checkpoint,
            {images: images_value, labels: labels_value})
    assert plan.scope_map == {}
    assert not plan.missing
    assert 'MobilenetV2/Conv_1/weights' in plan.unexpected
    assert np.mean(values[-3:]) < np.mean(values[:3])
    assert np.abs(final - restored).max() > 1e-4
