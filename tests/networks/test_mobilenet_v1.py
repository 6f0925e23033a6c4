"""MobileNet v1's behaviours, as the reference's own tests pin them."""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from slimnets import mobilenet_v1
from slimnets import slim

# Endpoint -> (stride from the input, depth at multiplier 1) of the base.
BASE_LAYERS = [('Conv2d_0', 2, 32)]
for _index, _conv in enumerate(mobilenet_v1.MOBILENETV1_CONV_DEFS[1:], 1):
    _stride = BASE_LAYERS[-1][1] * _conv.stride
    BASE_LAYERS.append(('Conv2d_%d_depthwise' % _index, _stride,
                        BASE_LAYERS[-1][2]))
    BASE_LAYERS.append(('Conv2d_%d_pointwise' % _index, _stride, _conv.depth))
BASE_ENDPOINTS = [name for name, _, _ in BASE_LAYERS]


def build(function, shape=(2, 224, 224, 3), **kwargs):
    """Builds `function` in a fresh graph; returns (graph, net, end_points)."""
    graph = tf.Graph()
    with graph.as_default():
        inputs = tf.placeholder(tf.float32, shape)
        net, end_points = function(inputs, **kwargs)
    return graph, net, end_points


def test_base_has_27_endpoints():
    assert len(BASE_ENDPOINTS) == 27


def test_classification_shapes_and_op_names():
    def classifier(inputs, **kwargs):
        with slim.arg_scope(mobilenet_v1.mobilenet_v1_arg_scope()):
            return mobilenet_v1.mobilenet_v1(inputs, **kwargs)

    graph, logits, end_points = build(classifier, num_classes=1000)
    assert logits.op.name == 'MobilenetV1/Logits/SpatialSqueeze'
    assert logits.shape.as_list() == [2, 1000]
    assert end_points['Predictions'].op.name == \
        'MobilenetV1/Predictions/Reshape_1'
    assert end_points['Predictions'].shape.as_list() == [2, 1000]
    assert end_points['AvgPool_1a'].shape.as_list() == [2, 1, 1, 1024]
    assert set(end_points) == set(BASE_ENDPOINTS) | {
        'AvgPool_1a', 'Logits', 'Predictions'}
    with graph.as_default():
        assert len(tf.trainable_variables()) == 83


def test_pre_logits_when_num_classes_is_none():
    _, net, end_points = build(mobilenet_v1.mobilenet_v1, num_classes=None)
    assert net.op.name.startswith('MobilenetV1/Logits/AvgPool')
    assert net.shape.as_list() == [2, 1, 1, 1024]
    assert 'Logits' not in end_points


@pytest.mark.parametrize('explicit_padding', [False, True])
def test_every_base_endpoint_shape(explicit_padding):
    _, net, end_points = build(mobilenet_v1.mobilenet_v1_base,
                               use_explicit_padding=explicit_padding)
    assert list(end_points) == BASE_ENDPOINTS
    for name, stride, depth in BASE_LAYERS:
        assert end_points[name].shape.as_list() == [
            2, 224 // stride, 224 // stride, depth], name
    assert net is end_points['Conv2d_13_pointwise']


def test_every_final_endpoint():
    for index, final_endpoint in enumerate(BASE_ENDPOINTS):
        graph, net, end_points = build(mobilenet_v1.mobilenet_v1_base,
                                       shape=(1, 32, 32, 3),
                                       final_endpoint=final_endpoint,
                                       depth_multiplier=0.25)
        assert net.op.name.startswith('MobilenetV1/' + final_endpoint + '/')
        assert list(end_points) == BASE_ENDPOINTS[:index + 1]
    with pytest.raises(ValueError, match='Unknown final endpoint'):
        build(mobilenet_v1.mobilenet_v1_base, final_endpoint='Conv2d_99')


def test_custom_conv_defs():
    conv_defs = [mobilenet_v1.Conv(kernel=[3, 3], stride=2, depth=64),
                 mobilenet_v1.DepthSepConv(kernel=[3, 3], stride=2, depth=512)]
    _, net, end_points = build(mobilenet_v1.mobilenet_v1_base,
                               final_endpoint='Conv2d_1_pointwise',
                               conv_defs=conv_defs)
    assert net.shape.as_list() == [2, 56, 56, 512]
    assert list(end_points) == ['Conv2d_0', 'Conv2d_1_depthwise',
                                'Conv2d_1_pointwise']
    with pytest.raises(ValueError, match='Unknown convolution type'):
        build(mobilenet_v1.mobilenet_v1_base,
              conv_defs=[('not', 'a', 'conv def')])


@pytest.mark.parametrize('output_stride', [8, 16])
@pytest.mark.parametrize('explicit_padding', [False, True])
def test_output_stride(output_stride, explicit_padding):
    _, _, end_points = build(mobilenet_v1.mobilenet_v1_base,
                             output_stride=output_stride,
                             use_explicit_padding=explicit_padding)
    for name, stride, depth in BASE_LAYERS:
        size = 224 // min(stride, output_stride)
        assert end_points[name].shape.as_list() == [2, size, size, depth], name


def test_output_stride_must_be_supported():
    with pytest.raises(ValueError, match='output_stride'):
        build(mobilenet_v1.mobilenet_v1_base, output_stride=4)


@pytest.mark.parametrize('multiplier', [0.5, 2.0])
def test_depth_multiplier_scales_every_conv(multiplier):
    _, _, end_points = build(mobilenet_v1.mobilenet_v1_base,
                             shape=(1, 64, 64, 3),
                             depth_multiplier=multiplier)
    for name, _, depth in BASE_LAYERS:
        assert end_points[name].shape[3] == max(int(depth * multiplier), 8)


@pytest.mark.parametrize('multiplier', [0.0, -0.1])
def test_depth_multiplier_must_be_positive(multiplier):
    with pytest.raises(ValueError, match='depth_multiplier'):
        build(mobilenet_v1.mobilenet_v1, depth_multiplier=multiplier)


def test_min_depth():
    _, _, end_points = build(mobilenet_v1.mobilenet_v1_base,
                             shape=(1, 32, 32, 3), depth_multiplier=0.01,
                             min_depth=16)
    assert {int(t.shape[3]) for t in end_points.values()} == {16}


@pytest.mark.parametrize('size,multiplier', [(112, 1.0), (128, 0.75)])
def test_small_inputs_reduce_the_pool(size, multiplier):
    _, logits, end_points = build(mobilenet_v1.mobilenet_v1,
                                  shape=(2, size, size, 3), num_classes=1000,
                                  depth_multiplier=multiplier)
    final = -(-size // 32)  # 'SAME' convolutions round up.
    assert end_points['Conv2d_13_pointwise'].shape.as_list()[1:3] == [final,
                                                                      final]
    assert end_points['AvgPool_1a'].shape.as_list()[1:3] == [1, 1]
    assert logits.shape.as_list() == [2, 1000]


def test_unknown_height_width_and_batch():
    graph, logits, end_points = build(mobilenet_v1.mobilenet_v1,
                                      shape=(None, None, None, 3),
                                      num_classes=10, depth_multiplier=0.25)
    assert logits.shape.as_list() == [None, 10]
    assert end_points['Conv2d_13_pointwise'].shape.as_list() == [
        None, None, None, 256]
    with graph.as_default(), tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        inputs = graph.get_tensor_by_name('Placeholder:0')
        value = sess.run(logits, {inputs: np.zeros((3, 224, 224, 3))})
    assert value.shape == (3, 10)


def test_global_pool_on_a_non_square_input():
    graph, logits, end_points = build(mobilenet_v1.mobilenet_v1,
                                      shape=(1, 250, 300, 3), num_classes=10,
                                      depth_multiplier=0.25, global_pool=True,
                                      spatial_squeeze=False)
    assert end_points['Conv2d_13_pointwise'].shape.as_list() == [1, 8, 10, 256]
    assert end_points['global_pool'].shape.as_list() == [1, 1, 1, 256]
    assert logits.shape.as_list() == [1, 1, 1, 10]
    with graph.as_default():
        unknown = tf.placeholder(tf.float32, [1, None, None, 3])
        pooled, points = mobilenet_v1.mobilenet_v1(
            unknown, num_classes=None, depth_multiplier=0.25,
            global_pool=True, reuse=True)
        assert points['global_pool'].shape.as_list() == [1, 1, 1, 256]
        assert pooled is points['global_pool']


def test_variable_reuse():
    graph = tf.Graph()
    with graph.as_default():
        inputs = tf.placeholder(tf.float32, (1, 64, 64, 3))
        mobilenet_v1.mobilenet_v1(inputs, num_classes=10, depth_multiplier=0.25)
        count = len(tf.global_variables())
        mobilenet_v1.mobilenet_v1(inputs, num_classes=10, depth_multiplier=0.25,
                                  reuse=True)
        assert len(tf.global_variables()) == count
        with pytest.raises(ValueError):
            mobilenet_v1.mobilenet_v1(inputs, num_classes=10,
                                      depth_multiplier=0.25)


def test_spatial_squeeze_false():
    _, logits, _ = build(mobilenet_v1.mobilenet_v1, num_classes=1000,
                         spatial_squeeze=False)
    assert logits.shape.as_list() == [2, 1, 1, 1000]


def test_rank_must_be_four():
    with pytest.raises(ValueError, match='rank'):
        build(mobilenet_v1.mobilenet_v1, shape=(224, 224, 3))


def test_arg_scope_without_is_training_leaves_batch_norm_unset():
    key = slim.arg_scope_func_key(slim.batch_norm)
    unset = mobilenet_v1.mobilenet_v1_arg_scope(is_training=None)
    assert 'is_training' not in unset[key]
    assert mobilenet_v1.mobilenet_v1_arg_scope(is_training=False)[key][
        'is_training'] is False
    with slim.arg_scope(unset):
        assert slim.current_arg_scope()[key]['decay'] == 0.9997


def test_arg_scope_regularizes_depthwise_only_when_asked():
    for regularize, expected in ((False, 15), (True, 28)):
        graph = tf.Graph()
        with graph.as_default():
            with slim.arg_scope(mobilenet_v1.mobilenet_v1_arg_scope(
                    regularize_depthwise=regularize)):
                mobilenet_v1.mobilenet_v1(tf.zeros([1, 64, 64, 3]),
                                          num_classes=10,
                                          depth_multiplier=0.25)
            losses = tf.get_collection(tf.GraphKeys.REGULARIZATION_LOSSES)
            assert len(losses) == expected


def test_default_image_size_and_partials():
    assert mobilenet_v1.mobilenet_v1.default_image_size == 224
    for partial, multiplier in ((mobilenet_v1.mobilenet_v1_075, 0.75),
                                (mobilenet_v1.mobilenet_v1_050, 0.50),
                                (mobilenet_v1.mobilenet_v1_025, 0.25)):
        assert partial.keywords == {'depth_multiplier': multiplier}
        assert partial.default_image_size == 224
        assert partial.__name__ == 'mobilenet_v1'


def test_reduced_kernel_size_for_small_input():
    graph = tf.Graph()
    with graph.as_default():
        small = tf.zeros([1, 3, 5, 8])
        unknown = tf.placeholder(tf.float32, [1, None, 9, 8])
        reduce = mobilenet_v1._reduced_kernel_size_for_small_input  # pylint: disable=protected-access
        assert reduce(small, [7, 7]) == [3, 5]
        assert reduce(tf.zeros([1, 9, 9, 8]), [7, 7]) == [7, 7]
        assert reduce(unknown, [7, 7]) == [7, 7]


class TestBeyondTheReference(object):

    @pytest.mark.parametrize('explicit_padding', [False, True])
    def test_classifier_forwards_output_stride_and_padding(self,
                                                           explicit_padding):
        graph, logits, end_points = build(
            mobilenet_v1.mobilenet_v1, shape=(1, 128, 128, 3), num_classes=10,
            depth_multiplier=0.25, output_stride=16,
            use_explicit_padding=explicit_padding)
        assert end_points['Conv2d_13_pointwise'].shape.as_list() == [
            1, 8, 8, 256]
        assert logits.shape.as_list() == [1, 10]
        pads = [op for op in graph.get_operations() if op.type == 'Pad']
        assert bool(pads) == explicit_padding

    def test_defaults_unchanged(self):
        _, _, end_points = build(mobilenet_v1.mobilenet_v1,
                                 shape=(1, 128, 128, 3), num_classes=10)
        assert end_points['Conv2d_13_pointwise'].shape.as_list()[1:3] == [4, 4]

    def test_fixed_padding_of_a_non_square_kernel(self):
        with tf.Graph().as_default():
            padded = mobilenet_v1._fixed_padding(  # pylint: disable=protected-access
                tf.ones([1, 4, 4, 1]), [1, 5])
            dilated = mobilenet_v1._fixed_padding(  # pylint: disable=protected-access
                tf.ones([1, 4, 4, 1]), [3, 2], rate=2)
            with tf.Session() as sess:
                padded_value, dilated_value = sess.run([padded, dilated])
        assert padded_value.shape == (1, 4, 8, 1)
        # Width 5: two columns before, two after; height 1: no padding.
        assert padded_value[0, :, :, 0].sum(axis=0).tolist() == [
            0, 0, 4, 4, 4, 4, 0, 0]
        # Effective kernel 5x3: (2, 2) rows and (1, 1) columns.
        assert dilated_value.shape == (1, 8, 6, 1)
        assert dilated_value[0, 2:6, 1:5, 0].sum() == 16
