"""The networks inside other graphs: the object-detection API's and
DeepLab's call patterns verbatim, `slimnets.features`, backbone restore."""

import copy

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from slimnets import features
from slimnets import mobilenet_v1
from slimnets import slim
from slimnets.mobilenet import conv_blocks
from slimnets.mobilenet import mobilenet
from slimnets.mobilenet import mobilenet_v2
from slimnets.mobilenet import mobilenet_v3


def shapes(end_points, names):
    return [end_points[n].shape.as_list() for n in names]


def in_graph(function):
    with tf.Graph().as_default():
        return function()


# ------------------------------------------- the detection API, verbatim

def test_ssd_mobilenet_v1():
    def build():
        preprocessed_inputs = tf.zeros([2, 300, 300, 3])
        with tf.variable_scope('FeatureExtractor'):
            with tf.variable_scope('MobilenetV1', reuse=None) as scope:
                with slim.arg_scope(mobilenet_v1.mobilenet_v1_arg_scope(
                        is_training=None, regularize_depthwise=True)):
                    _, image_features = mobilenet_v1.mobilenet_v1_base(
                        preprocessed_inputs,
                        final_endpoint='Conv2d_13_pointwise',
                        min_depth=16, depth_multiplier=0.5,
                        use_explicit_padding=False, scope=scope)
        names = [v.op.name for v in tf.global_variables()]
        regularized = len(tf.get_collection(tf.GraphKeys.REGULARIZATION_LOSSES))
        return image_features, names, regularized

    image_features, names, regularized = in_graph(build)
    assert shapes(image_features, ['Conv2d_11_pointwise',
                                   'Conv2d_13_pointwise']) == [
        [2, 19, 19, 256], [2, 10, 10, 512]]
    assert names[0] == 'FeatureExtractor/MobilenetV1/Conv2d_0/weights'
    assert regularized == 27  # depthwise weights regularized too


def test_ssd_fpn_mobilenet_v1_with_replaced_conv_defs():
    def build():
        conv_defs = copy.deepcopy(mobilenet_v1.MOBILENETV1_CONV_DEFS)
        conv_defs[-2] = mobilenet_v1.DepthSepConv(kernel=[3, 3], stride=2,
                                                  depth=512)
        conv_defs[-1] = mobilenet_v1.DepthSepConv(kernel=[3, 3], stride=1,
                                                  depth=256)
        with tf.variable_scope('MobilenetV1') as scope:
            with slim.arg_scope(mobilenet_v1.mobilenet_v1_arg_scope(
                    is_training=None, regularize_depthwise=True)):
                _, image_features = mobilenet_v1.mobilenet_v1_base(
                    tf.zeros([1, 256, 256, 3]),
                    final_endpoint='Conv2d_13_pointwise', min_depth=16,
                    depth_multiplier=1.0, conv_defs=conv_defs,
                    use_explicit_padding=True, scope=scope)
        return image_features

    image_features = in_graph(build)
    assert shapes(image_features, ['Conv2d_3_pointwise', 'Conv2d_5_pointwise',
                                   'Conv2d_11_pointwise',
                                   'Conv2d_13_pointwise']) == [
        [1, 64, 64, 128], [1, 32, 32, 256], [1, 16, 16, 512],
        [1, 8, 8, 256]]


def test_faster_rcnn_mobilenet_v1_stops_at_conv11():
    def build():
        with tf.variable_scope('MobilenetV1') as scope:
            with slim.arg_scope(mobilenet_v1.mobilenet_v1_arg_scope(
                    is_training=False, weight_decay=0.0)):
                net, activations = mobilenet_v1.mobilenet_v1_base(
                    tf.zeros([1, 224, 224, 3]),
                    final_endpoint='Conv2d_11_pointwise', min_depth=16,
                    depth_multiplier=1.0, scope=scope)
        return net, activations, tf.global_variables()

    net, activations, variables = in_graph(build)
    assert net.shape.as_list() == [1, 14, 14, 512]
    assert 'Conv2d_12_depthwise' not in activations
    assert variables[-1].op.name.startswith('MobilenetV1/Conv2d_11_pointwise')


def test_ssd_mobilenet_v2():
    def build():
        with tf.variable_scope('MobilenetV2', reuse=None) as scope:
            with slim.arg_scope(mobilenet_v2.training_scope(
                    is_training=None, bn_decay=0.9997)), \
                    slim.arg_scope([mobilenet.depth_multiplier], min_depth=16):
                _, image_features = mobilenet_v2.mobilenet_base(
                    tf.zeros([2, 320, 320, 3]), final_endpoint='layer_19',
                    depth_multiplier=0.5, use_explicit_padding=False,
                    scope=scope)
        key = slim.arg_scope_func_key(slim.batch_norm)
        with slim.arg_scope(mobilenet_v2.training_scope(is_training=None,
                                                        bn_decay=0.9997)) as sc:
            decay = sc[key]
        return image_features, decay

    image_features, decay = in_graph(build)
    assert shapes(image_features, ['layer_15/expansion_output', 'layer_19']) == [
        [2, 20, 20, 288], [2, 10, 10, 1280 // 2]]
    assert decay == {'decay': 0.9997}


@pytest.mark.parametrize('conv_defs,scope_name,from_layer,expected', [
    (mobilenet_v3.V3_LARGE_DETECTION, 'MobilenetV3',
     ['layer_14/expansion_output', 'layer_17'],
     [[1, 20, 20, 672], [1, 10, 10, 480]]),
    (mobilenet_v3.V3_SMALL_DETECTION, 'MobilenetV3',
     ['layer_10/expansion_output', 'layer_13'],
     [[1, 20, 20, 288], [1, 10, 10, 288]]),
    (mobilenet_v3.V3_EDGETPU, 'MobilenetEdgeTPU',
     ['layer_18/expansion_output', 'layer_23'],
     [[1, 20, 20, 384], [1, 10, 10, 192]]),
])
def test_ssd_mobilenet_v3_and_edgetpu(conv_defs, scope_name, from_layer,
                                      expected):
    def build():
        with tf.variable_scope(scope_name, reuse=None) as scope:
            with slim.arg_scope(mobilenet_v3.training_scope(
                    is_training=None, bn_decay=0.9997)), \
                    slim.arg_scope([mobilenet.depth_multiplier], min_depth=16):
                _, image_features = mobilenet_v3.mobilenet_base(
                    tf.zeros([1, 320, 320, 3]), conv_defs=conv_defs,
                    final_endpoint=from_layer[1], depth_multiplier=1.0,
                    use_explicit_padding=False, scope=scope)
        return image_features, tf.global_variables()[0].op.name

    image_features, first = in_graph(build)
    assert shapes(image_features, from_layer) == expected
    assert first == scope_name + '/Conv/weights'


@pytest.mark.parametrize('output_stride,multiplier', [(8, 1.0), (16, 1.0),
                                                      (8, 0.5), (16, 0.5)])
def test_deeplab_mobilenet_v2(output_stride, multiplier):
    def build():
        with slim.arg_scope(mobilenet_v2.training_scope(is_training=False,
                                                        weight_decay=4e-5)):
            with tf.variable_scope(None, 'MobilenetV2',
                                   [tf.zeros([1])]) as scope:
                return mobilenet_v2.mobilenet_base(
                    tf.zeros([1, 129, 129, 3]), conv_defs=mobilenet_v2.V2_DEF,
                    depth_multiplier=multiplier,
                    min_depth=8 if multiplier == 1.0 else 1,
                    divisible_by=8 if multiplier == 1.0 else 1,
                    final_endpoint='layer_18', output_stride=output_stride,
                    scope=scope)

    net, end_points = in_graph(build)
    size = -(-129 // output_stride)
    assert net.shape.as_list() == [1, size, size, int(320 * multiplier)]
    # divisible_by=1 keeps exact multiples: 16 * 0.5 = 8, 24 * 0.5 = 12.
    assert end_points['layer_3'].shape[3] == int(24 * multiplier)


def test_arg_scopes_on_builder_functions():
    def build():
        with slim.arg_scope([conv_blocks.expanded_conv],
                            inner_activation_fn=tf.nn.relu), \
                slim.arg_scope([mobilenet.apply_activation],
                               activation_fn=tf.nn.relu), \
                slim.arg_scope([mobilenet.mobilenet_base],
                               use_explicit_padding=True):
            net, end_points = mobilenet_v2.mobilenet_base(
                tf.zeros([1, 64, 64, 3]), depth_multiplier=1.0,
                final_endpoint='layer_4')
            activated = mobilenet.apply_activation(net)
        ops = {op.name: op.type
               for op in tf.get_default_graph().get_operations()}
        return end_points, activated, ops

    end_points, activated, ops = in_graph(build)
    # expanded_conv's arg scope reached the blocks built from V2_DEF.
    assert ops['MobilenetV2/expanded_conv_1/expand/Relu'] == 'Relu'
    assert 'MobilenetV2/expanded_conv_1/expand/Relu6' not in ops
    assert end_points['layer_3/expansion_output'].shape[3] == 96  # 16 * 6
    # mobilenet_base's arg scope turned on explicit padding.
    assert 'Pad' in ops.values()
    assert activated.op.type == 'Relu'


# ------------------------------------------------------- slimnets.features

@pytest.mark.parametrize('backbone,size,expected', [
    ('mobilenet_v1', 128, [[1, 8, 8, 256], [1, 4, 4, 512]]),
    ('mobilenet_v1_fpn', 128, [[1, 32, 32, 64], [1, 16, 16, 128],
                               [1, 8, 8, 256], [1, 4, 4, 128]]),
    ('mobilenet_v2', 128, [[1, 8, 8, 288], [1, 4, 4, 640]]),
    ('mobilenet_v2_deeplab', 129, [[1, 17, 17, 160]]),
    ('mobilenet_v3_large', 128, [[1, 8, 8, 336], [1, 4, 4, 240]]),
    ('mobilenet_v3_small', 128, [[1, 8, 8, 144], [1, 4, 4, 144]]),
    ('mobilenet_edgetpu', 128, [[1, 8, 8, 192], [1, 4, 4, 96]]),
])
def test_features_of_every_backbone(backbone, size, expected):
    output_stride = 8 if backbone == 'mobilenet_v2_deeplab' else None
    maps = in_graph(lambda: features.features(
        tf.zeros([1, size, size, 3]), backbone, depth_multiplier=0.5,
        output_stride=output_stride))
    assert list(maps) == list(features.BACKBONES[backbone].endpoints)
    assert [m.shape.as_list() for m in maps.values()] == expected


def test_features_scope_padding_and_endpoints():
    def build():
        images = tf.placeholder(tf.float32, [1, 100, 90, 3])
        maps = features.features(images, 'mobilenet_v1',
                                 endpoints=['Conv2d_5_pointwise',
                                            'Conv2d_3_pointwise'],
                                 depth_multiplier=0.25, pad_to_multiple_of=32,
                                 scope='FeatureExtractor/MobilenetV1')
        return maps, [v.op.name for v in tf.global_variables()]

    maps, names = in_graph(build)
    assert list(maps) == ['Conv2d_5_pointwise', 'Conv2d_3_pointwise']
    assert maps['Conv2d_5_pointwise'].shape.as_list() == [1, 16, 12, 64]
    assert all(n.startswith('FeatureExtractor/MobilenetV1/') for n in names)
    assert not any('Conv2d_6' in n for n in names)


def test_features_errors():
    with pytest.raises(ValueError, match='unknown backbone'):
        in_graph(lambda: features.features(tf.zeros([1, 32, 32, 3]), 'vgg'))
    with pytest.raises(ValueError, match='no endpoint layer_99'):
        in_graph(lambda: features.features(tf.zeros([1, 32, 32, 3]),
                                           'mobilenet_v2',
                                           endpoints=['layer_99']))


def test_pad_to_multiple():
    with tf.Graph().as_default():
        images = tf.placeholder(tf.float32, [2, None, 30, 3])
        padded = features.pad_to_multiple(images, 16)
        assert padded.shape.as_list() == [2, None, 32, 3]
        with tf.Session() as sess:
            value = sess.run(padded, {images: np.ones([2, 17, 30, 3])})
    assert value.shape == (2, 32, 32, 3)
    assert value[:, 17:].sum() == 0 and value[:, :, 30:].sum() == 0
