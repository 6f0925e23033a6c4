"""Behaviours of the nets/mobilenet tree (v2, v3, EdgeTPU) and the fixes."""

import ast
import copy
import inspect

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from slimnets import mobilenet_v1
from slimnets import primitives
from slimnets import slim
from slimnets.mobilenet import conv_blocks
from slimnets.mobilenet import mobilenet
from slimnets.mobilenet import mobilenet_v2
from slimnets.mobilenet import mobilenet_v3


def build(function, shape=(2, 224, 224, 3), scope_fn=None, **kwargs):
    """Builds `function` in a fresh graph; returns (graph, net, end_points)."""
    graph = tf.Graph()
    with graph.as_default():
        inputs = tf.placeholder(tf.float32, shape)
        if scope_fn is None:
            net, end_points = function(inputs, **kwargs)
        else:
            with slim.arg_scope(scope_fn()):
                net, end_points = function(inputs, **kwargs)
    return graph, net, end_points


def count_ops(graph, op_type):
    return len([op for op in graph.get_operations() if op.type == op_type])


class TestMobilenetV2(object):

    def test_conv2d_count_and_depthwise_endpoints(self):
        graph, logits, end_points = build(mobilenet_v2.mobilenet,
                                          num_classes=1001)
        assert count_ops(graph, 'Conv2D') == 36
        assert logits.shape.as_list() == [2, 1001]
        for index in range(2, 17):
            assert 'layer_%d/depthwise_output' % index in end_points
        assert end_points['layer_15/expansion_output'].shape.as_list() == [
            2, 14, 14, 576]

    def test_num_classes_none_returns_global_pool(self):
        _, net, end_points = build(mobilenet_v2.mobilenet, num_classes=None,
                                   depth_multiplier=0.35)
        assert net is end_points['global_pool']
        assert net.shape.as_list() == [2, 1, 1, 448]  # 1280 * 0.35
        assert 'Logits' not in end_points

    @pytest.mark.parametrize('size,expected', [(224, 7), (192, 6), (160, 5),
                                               (128, 4), (96, 3)])
    def test_layer_18_spatial_size(self, size, expected):
        _, _, end_points = build(mobilenet_v2.mobilenet_base,
                                 shape=(1, size, size, 3),
                                 depth_multiplier=0.35)
        assert end_points['layer_18/output'].shape.as_list()[1:3] == [
            expected, expected]

    def test_split_expansion(self):
        conv_defs = copy.deepcopy(mobilenet_v2.V2_DEF)
        conv_defs['defaults'][(conv_blocks.expanded_conv,)][
            'split_expansion'] = 2
        with tf.Graph().as_default() as graph:
            with slim.arg_scope((mobilenet.depth_multiplier,), min_depth=32):
                mobilenet_v2.mobilenet(tf.zeros([2, 224, 224, 16]),
                                       conv_defs=conv_defs)
        assert count_ops(graph, 'Conv2D') == 52

    @pytest.mark.parametrize('output_stride', [8, 16])
    @pytest.mark.parametrize('explicit_padding', [False, True])
    def test_output_stride(self, output_stride, explicit_padding):
        _, net, end_points = build(mobilenet_v2.mobilenet_base,
                                   depth_multiplier=0.35,
                                   output_stride=output_stride,
                                   use_explicit_padding=explicit_padding)
        size = 224 // output_stride
        assert net.shape.as_list()[1:3] == [size, size]
        assert end_points['layer_18/output'].shape.as_list()[1:3] == [size, size]

    @pytest.mark.parametrize('divisible_by,min_depth,first_block', [
        (None, None, 8),   # 16 * 0.1 -> made divisible by 8, at least 8
        (1, 1, 2),         # 16 * 0.1 -> 1.6 -> 2
        (1, 4, 4),
        (16, 16, 16),
    ])
    def test_divisible_by_and_min_depth(self, divisible_by, min_depth,
                                        first_block):
        _, _, end_points = build(mobilenet_v2.mobilenet_base,
                                 shape=(1, 64, 64, 3), depth_multiplier=0.1,
                                 divisible_by=divisible_by,
                                 min_depth=min_depth)
        assert end_points['layer_2'].shape[3] == first_block

    def test_depth_multiplier_arg_scope(self):
        with slim.arg_scope((mobilenet.depth_multiplier,), min_depth=32):
            _, _, end_points = build(mobilenet_v2.mobilenet_base,
                                     shape=(1, 64, 64, 3),
                                     depth_multiplier=0.1)
        assert end_points['layer_2'].shape[3] == 32

    @pytest.mark.parametrize('multiplier', [0.01, 0.1])
    def test_finegrain_keeps_the_head(self, multiplier):
        _, net, end_points = build(mobilenet_v2.mobilenet, num_classes=10,
                                   shape=(1, 96, 96, 3),
                                   depth_multiplier=multiplier,
                                   finegrain_classification_mode=True)
        assert end_points['layer_19'].shape[3] == 1280
        assert end_points['layer_18'].shape[3] == mobilenet._make_divisible(  # pylint: disable=protected-access
            320 * multiplier, 8)
        assert net.shape.as_list() == [1, 10]

    def test_without_finegrain_the_head_shrinks(self):
        _, _, end_points = build(mobilenet_v2.mobilenet_base,
                                 shape=(1, 96, 96, 3), depth_multiplier=0.1)
        assert end_points['layer_19'].shape[3] == 128

    def test_custom_multiplier_func(self):
        def unscaled(params, multiplier):
            del multiplier
            return params

        conv_defs = copy.deepcopy(mobilenet_v2.V2_DEF)
        conv_defs['spec'] = [mobilenet.op(o.op, multiplier_func=unscaled,
                                          **o.params)
                             for o in conv_defs['spec']]
        _, _, end_points = build(mobilenet_v2.mobilenet_base,
                                 shape=(1, 64, 64, 3), conv_defs=conv_defs,
                                 depth_multiplier=0.1)
        assert end_points['layer_19'].shape[3] == 1280
        assert end_points['layer_1'].shape[3] == 32

    def test_multiplier_keyword_is_rejected(self):
        with pytest.raises(ValueError, match='depth_multiplier'):
            build(mobilenet_v2.mobilenet, multiplier=0.5)

    def test_invalid_multiplier_and_output_stride(self):
        with pytest.raises(ValueError, match='multiplier'):
            build(mobilenet_v2.mobilenet_base, depth_multiplier=0.0)
        with pytest.raises(ValueError, match='Output stride'):
            build(mobilenet_v2.mobilenet_base, output_stride=3)

    @pytest.mark.parametrize('is_training', [True, False])
    def test_training_scope_reaches_batch_norm_and_dropout(self, is_training):
        with slim.arg_scope(mobilenet_v2.training_scope(
                is_training=is_training)):
            graph, _, _ = build(mobilenet_v2.mobilenet, shape=(2, 64, 64, 3),
                                depth_multiplier=0.35, num_classes=10)
        with graph.as_default():
            updates = tf.get_collection(tf.GraphKeys.UPDATE_OPS)
            assert len(updates) == (104 if is_training else 0)
        dropout_ops = [op for op in graph.get_operations()
                       if op.name.startswith('MobilenetV2/Logits/Dropout/')
                       and op.type == 'RandomUniform']
        assert bool(dropout_ops) == is_training

    def test_training_scope_defaults(self):
        scope = mobilenet_v2.training_scope()
        bn = scope[slim.arg_scope_func_key(slim.batch_norm)]
        dropout = scope[slim.arg_scope_func_key(slim.dropout)]
        assert bn == {'decay': 0.997, 'is_training': True}
        assert dropout == {'is_training': True, 'keep_prob': 0.8}
        unset = mobilenet_v2.training_scope(is_training=None)
        assert unset[slim.arg_scope_func_key(slim.batch_norm)] == {
            'decay': 0.997}

    def test_activation_fn_replaces_relu6(self):
        graph, _, _ = build(mobilenet_v2.mobilenet_base, shape=(1, 32, 32, 3),
                            depth_multiplier=0.35, activation_fn=tf.nn.relu)
        assert count_ops(graph, 'Relu6') == 0
        assert count_ops(graph, 'Relu') > 0
        assert mobilenet_v2.V2_DEF['defaults'][
            (slim.conv2d, slim.fully_connected, slim.separable_conv2d)][
                'activation_fn'] is tf.nn.relu6

    def test_public_names(self):
        assert mobilenet_v2.__all__ == ['training_scope', 'mobilenet_base',
                                        'mobilenet', 'V2_DEF']
        assert mobilenet_v2.mobilenet.default_image_size == 224
        assert len(mobilenet_v2.V2_DEF['spec']) == 19


class TestMobilenetV3(object):

    @pytest.mark.parametrize('network,head,size,depth', [
        (mobilenet_v3.large, 'layer_19', 1, 1280),
        (mobilenet_v3.small, 'layer_15', 1, 1024),
        (mobilenet_v3.edge_tpu, 'layer_24', 7, 1280),  # no reduce_to_1x1
        (mobilenet_v3.large_minimalistic, 'layer_19', 1, 1280),
        (mobilenet_v3.small_minimalistic, 'layer_15', 1, 1024),
    ])
    def test_head_endpoints(self, network, head, size, depth):
        _, logits, end_points = build(network, num_classes=1001)
        assert end_points[head].shape.as_list() == [2, size, size, depth]
        assert logits.shape.as_list() == [2, 1001]
        last_layer = max(int(k.split('_')[1]) for k in end_points
                         if k.startswith('layer_') and '/' not in k)
        assert 'layer_%d' % last_layer == head

    def test_edge_tpu_scope(self):
        graph, _, _ = build(mobilenet_v3.edge_tpu, shape=(1, 96, 96, 3),
                            depth_multiplier=0.5)
        with graph.as_default():
            assert tf.global_variables()[0].op.name == \
                'MobilenetEdgeTPU/Conv/weights'

    def test_group_norm_instead_of_batch_norm(self):
        graph, logits, _ = build(mobilenet_v3.small, shape=(1, 96, 96, 3),
                                 depth_multiplier=0.5, use_groupnorm=True,
                                 groups=4)
        with graph.as_default():
            names = [v.op.name for v in tf.global_variables()]
        assert not any('BatchNorm' in name for name in names)
        assert any('GroupNorm' in name for name in names)
        assert logits.shape.as_list() == [1, 1001]
        assert (slim.group_norm,) not in mobilenet_v3.V3_SMALL['defaults']

    def test_custom_scope(self):
        graph, _, _ = build(mobilenet_v3.large, shape=(1, 64, 64, 3),
                            depth_multiplier=0.35, scope='Backbone')
        with graph.as_default():
            assert all(v.op.name.startswith('Backbone/')
                       for v in tf.global_variables())

    def test_base_only_with_final_endpoint(self):
        _, net, end_points = build(mobilenet_v3.large, shape=(1, 96, 96, 3),
                                   depth_multiplier=0.35, base_only=True,
                                   final_endpoint='layer_7')
        assert net is end_points['layer_7']
        assert 'layer_8' not in end_points and 'Logits' not in end_points

    def test_unknown_spatial_size(self):
        graph, logits, end_points = build(mobilenet_v3.small,
                                          shape=(2, None, None, 3),
                                          depth_multiplier=0.5,
                                          num_classes=10)
        assert logits.shape.as_list() == [2, 10]
        with graph.as_default(), tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            inputs = graph.get_tensor_by_name('Placeholder:0')
            value = sess.run(logits, {inputs: np.zeros((2, 224, 224, 3))})
        assert value.shape == (2, 10)
        assert end_points['layer_14'].shape.as_list() == [2, None, None, 288]

    @pytest.mark.parametrize('reduce_mean', [False, True])
    def test_use_reduce_mean_for_pooling(self, reduce_mean):
        _, _, end_points = build(mobilenet_v3.small, shape=(1, 96, 96, 3),
                                 depth_multiplier=0.5,
                                 use_reduce_mean_for_pooling=reduce_mean)
        pool = end_points['global_pool']
        assert pool.op.type == ('Mean' if reduce_mean else 'AvgPool')
        assert pool.shape.as_list() == [1, 1, 1, 512]

    def test_hard_swish(self):
        with tf.Graph().as_default():
            values = tf.constant([-4.0, -3.0, -1.0, 0.0, 1.0, 3.0, 5.0])
            swished = mobilenet_v3.hard_swish(values)
            assert swished.op.name.startswith('hard_swish/')
            with tf.Session() as sess:
                result = sess.run(swished)
        x = np.array([-4.0, -3.0, -1.0, 0.0, 1.0, 3.0, 5.0])
        np.testing.assert_allclose(result, x * np.clip(x + 3, 0, 6) / 6,
                                   rtol=1e-6)

    def test_detection_defs_halve_the_last_blocks(self):
        large = [o.params.get('num_outputs')
                 for o in mobilenet_v3.V3_LARGE_DETECTION['spec']]
        assert large[13:17] == [80, 80, 80, 480]
        small = [o.params.get('num_outputs')
                 for o in mobilenet_v3.V3_SMALL_DETECTION['spec']]
        assert small[9:13] == [48, 48, 48, 288]
        assert all(isinstance(n, int) for n in large + small if n is not None)
        # The classification specs are untouched.
        assert mobilenet_v3.V3_LARGE['spec'][16].params['num_outputs'] == 960


class TestFixedReferenceBugs(object):
    """Each bug of the reference, fixed here (see README, Differences)."""

    @pytest.mark.parametrize('network', [mobilenet_v3.large,
                                         mobilenet_v3.small,
                                         mobilenet_v3.edge_tpu])
    def test_v3_explicit_padding_builds_a_classifier(self, network):
        _, logits, _ = build(network, shape=(1, 96, 96, 3),
                             depth_multiplier=0.5, num_classes=10,
                             use_explicit_padding=True)
        assert logits.shape.as_list() == [1, 10]

    @pytest.mark.parametrize('conv_defs', [mobilenet_v3.V3_LARGE,
                                           mobilenet_v3.V3_SMALL,
                                           mobilenet_v3.V3_EDGETPU])
    def test_v3_explicit_padding_matches_same_shapes(self, conv_defs):
        shapes = []
        for explicit in (False, True):
            _, _, end_points = build(mobilenet_v3.mobilenet_base,
                                     shape=(1, 97, 97, 3),
                                     conv_defs=conv_defs,
                                     depth_multiplier=0.5,
                                     use_explicit_padding=explicit)
            shapes.append({k: v.shape.as_list()
                           for k, v in end_points.items()})
        assert shapes[0] == shapes[1]

    def test_explicit_padding_pads_instead_of_same(self):
        graph, _, _ = build(mobilenet_v3.mobilenet_base, shape=(1, 64, 64, 3),
                            depth_multiplier=0.5, use_explicit_padding=True)
        # Every k x k (k > 1) convolution is 'VALID' on a padded input.
        for op in graph.get_operations():
            if op.type in ('Conv2D', 'DepthwiseConv2dNative'):
                kernel = op.inputs[1].shape.as_list()[:2]
                if kernel != [1, 1]:
                    assert op.get_attr('padding') == b'VALID', op.name
                    assert op.inputs[0].op.type == 'Pad', op.name

    @pytest.mark.parametrize('module', [mobilenet, conv_blocks])
    def test_fixed_padding_uses_the_kernel_width(self, module):
        with tf.Graph().as_default():
            padded = module._fixed_padding(  # pylint: disable=protected-access
                tf.zeros([1, 4, 4, 1]), [1, 3])
            assert padded.shape.as_list() == [1, 4, 6, 1]

    def test_group_norm_base_leaves_the_shared_def_alone(self):
        before = copy.copy(mobilenet_v2.V2_DEF_GROUP_NORM['defaults'])
        build(mobilenet_v2.mobilenet_base_group_norm, shape=(1, 32, 32, 3),
              depth_multiplier=0.35, groups=4)
        assert mobilenet_v2.V2_DEF_GROUP_NORM['defaults'] == before
        assert (slim.group_norm,) not in before

    def test_finegrain_does_not_mutate_conv_defs(self):
        before = [dict(o.params) for o in mobilenet_v2.V2_DEF['spec']]
        v3_before = [o.multiplier_func for o in mobilenet_v3.V3_LARGE['spec']]
        build(mobilenet_v2.mobilenet, shape=(1, 32, 32, 3),
              depth_multiplier=0.35, finegrain_classification_mode=True)
        build(mobilenet_v3.large, shape=(1, 32, 32, 3), depth_multiplier=0.35,
              finegrain_classification_mode=True)
        assert [dict(o.params) for o in mobilenet_v2.V2_DEF['spec']] == before
        assert [o.multiplier_func for o in mobilenet_v3.V3_LARGE['spec']] == \
            v3_before


class TestBuilderHelpers(object):

    def test_make_divisible(self):
        assert mobilenet._make_divisible(32 * 0.35, 8) == 16  # pylint: disable=protected-access
        assert conv_blocks._make_divisible(3, 8) == 8  # pylint: disable=protected-access
        assert conv_blocks._make_divisible(100, 8, min_value=128) == 128  # pylint: disable=protected-access
        assert conv_blocks._make_divisible(37, 32) == 64  # pylint: disable=protected-access
        assert isinstance(conv_blocks._make_divisible(9.6, 1), int)  # pylint: disable=protected-access

    def test_split_divisible(self):
        split = conv_blocks._split_divisible  # pylint: disable=protected-access
        assert split(64, 2) == [32, 32]
        assert split(40, 3) == [16, 16, 8]
        with pytest.raises(ValueError):
            split(20, 2)

    def test_safe_arg_scope_drops_none(self):
        assert isinstance(mobilenet.safe_arg_scope([slim.dropout],
                                                   keep_prob=None),
                          mobilenet.NoOpScope)
        with mobilenet.safe_arg_scope([slim.dropout], keep_prob=0.5,
                                      is_training=None) as scope:
            assert scope[slim.arg_scope_func_key(slim.dropout)] == {
                'keep_prob': 0.5}

    def test_op_and_multiplier_transform(self):
        layer = mobilenet.op(slim.conv2d, num_outputs=64, stride=2)
        assert layer.multiplier_func is mobilenet.depth_multiplier
        params = dict(layer.params)
        mobilenet.depth_multiplier(params, 0.5)
        assert params == {'num_outputs': 32, 'stride': 2}
        custom = mobilenet.op(slim.conv2d, multiplier_transform=len,
                              num_outputs=8)
        assert custom.multiplier_func is len and 'multiplier_transform' not in \
            custom.params

    def test_apply_activation(self):
        with tf.Graph().as_default():
            x = tf.constant([-1.0, 2.0])
            with slim.arg_scope([mobilenet.apply_activation],
                                activation_fn=tf.nn.relu):
                activated = mobilenet.apply_activation(x, name='act')
            assert mobilenet.apply_activation(x) is x
            with tf.Session() as sess:
                assert sess.run(activated).tolist() == [0.0, 2.0]

    def test_expanded_conv_rejects_bad_options(self):
        with tf.Graph().as_default():
            x = tf.zeros([1, 8, 8, 16])
            with pytest.raises(TypeError, match='depthwise_location'):
                conv_blocks.expanded_conv(x, 16, depthwise_location='middle')
            with pytest.raises(TypeError, match='SAME'):
                conv_blocks.expanded_conv(x, 16, use_explicit_padding=True,
                                          padding='VALID')

    def test_expanded_conv_structure(self):
        with tf.Graph().as_default():
            x = tf.zeros([1, 8, 8, 16])
            endpoints = {}
            first = conv_blocks.expanded_conv(x, 16, endpoints=endpoints)
            second = conv_blocks.expanded_conv(first, 24, stride=2)
            names = [v.op.name for v in tf.global_variables()]
            ops = {op.name for op in tf.get_default_graph().get_operations()}
        assert first.op.name == 'expanded_conv/output'
        assert second.shape.as_list() == [1, 4, 4, 24]
        assert 'expanded_conv/add' in ops and 'expanded_conv_1/add' not in ops
        assert names[:3] == ['expanded_conv/expand/weights',
                             'expanded_conv/expand/biases',
                             'expanded_conv/depthwise/depthwise_weights']
        assert set(endpoints) == {'expansion_output', 'depthwise_output',
                                  'projection_output'}
        assert endpoints['expansion_output'].shape.as_list() == [1, 8, 8, 96]

    def test_split_separable_conv2d_scopes(self):
        with tf.Graph().as_default():
            endpoints = {}
            net = conv_blocks.split_separable_conv2d(
                tf.zeros([1, 8, 8, 4]), 12, scope='Conv2d_1', stride=2,
                endpoints=endpoints)
            unnamed = conv_blocks.split_separable_conv2d(net, 8)
            names = [v.op.name for v in tf.global_variables()]
        assert net.shape.as_list() == [1, 4, 4, 12]
        assert unnamed.shape.as_list() == [1, 4, 4, 8]
        assert set(endpoints) == {'Conv2d_1_depthwise', 'Conv2d_1_pointwise'}
        assert 'Conv2d_1_depthwise/depthwise_weights' in names
        assert 'separable/depthwise/depthwise_weights' in names

    def test_squeeze_excite(self):
        with tf.Graph().as_default():
            x = tf.ones([1, 4, 4, 24])
            gated = mobilenet_v3.squeeze_excite(x)
            names = [v.op.name for v in tf.global_variables()]
        assert gated.shape.as_list() == [1, 4, 4, 24]
        assert names == ['squeeze_excite/Conv/weights',
                         'squeeze_excite/Conv/biases',
                         'squeeze_excite/Conv_1/weights',
                         'squeeze_excite/Conv_1/biases']

    def test_global_pool_unknown_size(self):
        with tf.Graph().as_default():
            x = tf.placeholder(tf.float32, [None, None, None, 5])
            pooled = mobilenet.global_pool(x)
            assert pooled.shape.as_list() == [None, 1, 1, 5]
            with tf.Session() as sess:
                value = sess.run(pooled, {x: np.arange(2 * 3 * 4 * 5).reshape(
                    2, 3, 4, 5).astype(np.float32)})
        assert value.shape == (2, 1, 1, 5)
        assert value[0, 0, 0, 0] == pytest.approx(np.arange(0, 60, 5).mean())


def _table_calls(module, name):
    """The calls written inside the assignment `name = ...` of `module`.

    Returns the called names ('op', 'mbv3_op', ...) in source order.
    """
    tree = ast.parse(inspect.getsource(module))
    for node in tree.body:
        if (isinstance(node, ast.Assign) and
                [getattr(t, 'id', None) for t in node.targets] == [name]):
            return [call.func.id for call in ast.walk(node.value)
                    if isinstance(call, ast.Call) and
                    isinstance(call.func, ast.Name)]
    raise AssertionError('%s has no assignment to %s' % (module, name))


# The reference's tables (research/slim nets/mobilenet): rows per spec.
V3_ROWS = {'V3_LARGE': 19, 'V3_SMALL': 15, 'V3_LARGE_MINIMALISTIC': 19,
           'V3_SMALL_MINIMALISTIC': 15, 'V3_EDGETPU': 24,
           'V3_LARGE_DETECTION': 19, 'V3_SMALL_DETECTION': 15}
_ROW_BUILDERS = ('op', 'mbv3_op', 'mbv3_op_se', 'mbv3_fused')


class TestReferenceTables(object):
    """The conv defs are the reference's literal tables (issue 12)."""

    def test_v2_def_is_the_literal_table(self):
        spec = mobilenet_v2.V2_DEF['spec']
        assert len(spec) == 19
        assert all(isinstance(row, mobilenet._Op) for row in spec)  # pylint: disable=protected-access
        # Written out row by row: one op(...) call per row, no loop.
        assert _table_calls(mobilenet_v2, 'V2_DEF').count('op') == 19
        first, last = spec[0], spec[-1]
        assert first.op is slim.conv2d
        assert first.params == {'stride': 2, 'num_outputs': 32,
                                'kernel_size': [3, 3]}
        assert last.op is slim.conv2d
        assert last.params == {'stride': 1, 'kernel_size': [1, 1],
                               'num_outputs': 1280}
        blocks = spec[1:-1]
        assert all(row.op is conv_blocks.expanded_conv for row in blocks)
        assert [(row.params.get('stride', 1), row.params['num_outputs'])
                for row in blocks] == [
                    (1, 16), (2, 24), (1, 24), (2, 32), (1, 32), (1, 32),
                    (2, 64), (1, 64), (1, 64), (1, 64), (1, 96), (1, 96),
                    (1, 96), (2, 160), (1, 160), (1, 160), (1, 320)]
        # Only the first block expands by 1 (unrounded), the others by 6.
        assert blocks[0].params['expansion_size'](num_inputs=32) == 32
        assert all('expansion_size' not in row.params for row in blocks[1:])

    def test_v2_defaults_are_the_reference_defaults(self):
        defaults = mobilenet_v2.V2_DEF['defaults']
        convs = (slim.conv2d, slim.fully_connected, slim.separable_conv2d)
        assert list(defaults) == [
            (slim.batch_norm,), convs, (conv_blocks.expanded_conv,),
            (slim.conv2d, slim.separable_conv2d)]
        assert defaults[(slim.batch_norm,)] == {'center': True, 'scale': True}
        assert defaults[convs] == {'normalizer_fn': slim.batch_norm,
                                   'activation_fn': tf.nn.relu6}
        block = dict(defaults[(conv_blocks.expanded_conv,)])
        assert block.pop('expansion_size')(num_inputs=24) == 144
        assert block == {'split_expansion': 1,
                         'normalizer_fn': slim.batch_norm, 'residual': True}
        assert defaults[(slim.conv2d, slim.separable_conv2d)] == {
            'padding': 'SAME'}

    def test_v2_group_norm_def_swaps_only_the_normalizer(self):
        norm = mobilenet_v2.V2_DEF_GROUP_NORM
        base = mobilenet_v2.V2_DEF
        assert [(row.op, row.params.get('stride'),
                 row.params.get('num_outputs')) for row in norm['spec']] == [
                     (row.op, row.params.get('stride'),
                      row.params.get('num_outputs')) for row in base['spec']]
        assert list(norm['defaults']) == list(base['defaults'])[1:]
        for funcs, kwargs in norm['defaults'].items():
            reference = base['defaults'][funcs]
            assert set(kwargs) == set(reference)
            for key, value in kwargs.items():
                if key == 'normalizer_fn':
                    assert value is slim.group_norm
                elif key != 'expansion_size':
                    assert value == reference[key]
        # Deriving it left V2_DEF on batch norm.
        assert base['defaults'][(conv_blocks.expanded_conv,)][
            'normalizer_fn'] is slim.batch_norm

    @pytest.mark.parametrize('name,rows', sorted(V3_ROWS.items()))
    def test_v3_row_counts(self, name, rows):
        spec = getattr(mobilenet_v3, name)['spec']
        assert len(spec) == rows
        assert all(isinstance(row, mobilenet._Op) for row in spec)  # pylint: disable=protected-access
        if not name.endswith('_DETECTION'):
            # A literal table: one row-builder call per row.
            calls = _table_calls(mobilenet_v3, name)
            assert len([c for c in calls if c in _ROW_BUILDERS]) == rows

    def test_v3_large_rows(self):
        spec = mobilenet_v3.V3_LARGE['spec']
        se_rows = [i for i, row in enumerate(spec)
                   if row.params.get('expansion_transform') is not None]
        assert se_rows == [4, 5, 6, 11, 12, 13, 14, 15]
        assert all(spec[i].params['expansion_transform'] is
                   mobilenet_v3._se4 for i in se_rows)  # pylint: disable=protected-access
        swish = [i for i, row in enumerate(spec)
                 if hard_swish_in(row.params)]
        assert swish == [0] + list(range(7, 17)) + [18]
        assert [row.params.get('num_outputs') for row in spec[-3:]] == [
            960, None, 1280]
        assert spec[-2].op is mobilenet_v3.reduce_to_1x1
        assert spec[-1].params['normalizer_fn'] is None

    @pytest.mark.parametrize('name', ['V3_LARGE_MINIMALISTIC',
                                      'V3_SMALL_MINIMALISTIC'])
    def test_minimalistic_rows_have_no_se_swish_or_5x5(self, name):
        for row in getattr(mobilenet_v3, name)['spec']:
            assert row.params.get('expansion_transform') is None
            assert not hard_swish_in(row.params)
            assert tuple(row.params.get('kernel_size', (3, 3))) in (
                (3, 3), (1, 1))

    def test_edgetpu_rows(self):
        spec = mobilenet_v3.V3_EDGETPU['spec']
        fused = [i for i, row in enumerate(spec)
                 if 'expansion_fn' in row.params]
        assert fused == list(range(1, 10))
        for i in fused:
            assert spec[i].params['depthwise_location'] is None
            assert spec[i].params['expansion_fn'].func is slim.conv2d
        assert [i for i, row in enumerate(spec)
                if row.params.get('residual') is False] == [14]
        assert spec[-1].params == {'stride': 1, 'num_outputs': 1280,
                                   'kernel_size': (1, 1)}

    def test_reference_helper_names(self):
        assert mobilenet_v3.mbv3_op_se.func is mobilenet_v3.mbv3_op
        assert mobilenet_v3.mbv3_op_se.keywords == {
            'se': mobilenet_v3._se4}  # pylint: disable=protected-access
        row = mobilenet_v3.mbv3_op(ef=4, n=24, k=5, s=2)
        assert row.op is conv_blocks.expanded_conv
        assert row.params['expansion_size'](num_inputs=16) == 64
        assert (row.params['kernel_size'], row.params['stride'],
                row.params['num_outputs']) == ((5, 5), 2, 24)
        assert mobilenet_v3.V3_LARGE['defaults'] == mobilenet_v3.DEFAULTS
        assert mobilenet_v3.V3_LARGE['defaults'] is not mobilenet_v3.DEFAULTS


def hard_swish_in(params):
    return mobilenet_v3.hard_swish in (params.get('activation_fn'),
                                       params.get('act'),
                                       params.get('inner_activation_fn'))


class TestSharedPrimitives(object):
    """Helpers shared by networks live in `slimnets.primitives` (issue 12)."""

    def test_reference_names_are_the_primitives(self):
        for module in (mobilenet_v1, mobilenet, conv_blocks):
            assert module._fixed_padding is primitives.fixed_padding  # pylint: disable=protected-access
        for module in (mobilenet, conv_blocks):
            assert module._make_divisible is primitives.make_divisible  # pylint: disable=protected-access
        assert (mobilenet_v1._reduced_kernel_size_for_small_input is  # pylint: disable=protected-access
                primitives.reduced_kernel_size_for_small_input)
        assert mobilenet_v1.wrapped_partial is primitives.wrapped_partial
        assert mobilenet_v2.wrapped_partial is primitives.wrapped_partial

    @pytest.mark.parametrize('kernel,rate,expected', [
        ([3, 3], 1, [1, 6, 8, 2]), ([1, 3], 1, [1, 4, 8, 2]),
        ([2, 2], 1, [1, 5, 7, 2]), ([3, 3], 2, [1, 8, 10, 2]),
        ([1, 1], 4, [1, 4, 6, 2])])
    def test_fixed_padding_shapes(self, kernel, rate, expected):
        with tf.Graph().as_default():
            padded = primitives.fixed_padding(tf.zeros([1, 4, 6, 2]), kernel,
                                              rate=rate)
        assert padded.shape.as_list() == expected

    def test_fixed_padding_puts_the_odd_pixel_after(self):
        with tf.Graph().as_default():
            padded = primitives.fixed_padding(tf.ones([1, 2, 2, 1]), [2, 4])
            with tf.Session() as sess:
                value = sess.run(padded)[0, :, :, 0]
        # Height: 0 before, 1 after; width: 1 before, 2 after.
        assert value.tolist() == [[0, 1, 1, 0, 0],
                                  [0, 1, 1, 0, 0],
                                  [0, 0, 0, 0, 0]]

    def test_make_divisible(self):
        assert primitives.make_divisible(32 * 0.35, 8) == 16
        assert primitives.make_divisible(3, 8) == 8
        assert primitives.make_divisible(100, 8, min_value=128) == 128
        assert primitives.make_divisible(37, 32) == 64  # 32 loses > 10%
        assert primitives.make_divisible(27, 8) == 32  # 24 loses > 10%
        assert primitives.make_divisible(20, 8) == 24  # halves round up
        assert primitives.make_divisible(17, 8) == 16  # within 10%: down
        assert isinstance(primitives.make_divisible(9.6, 1), int)

    def test_network_modules_import_no_private_names(self):
        network_modules = (mobilenet_v1, mobilenet, conv_blocks,
                           mobilenet_v2, mobilenet_v3, primitives)
        for module in network_modules:
            tree = ast.parse(inspect.getsource(module))
            aliases = set()
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom):
                    assert not any(a.name.startswith('_')
                                   for a in node.names), module.__name__
                    if (node.module or '').startswith('slimnets'):
                        aliases.update(a.asname or a.name for a in node.names)
                elif isinstance(node, ast.Import):
                    aliases.update(a.asname or a.name for a in node.names)
            for node in ast.walk(tree):
                if (isinstance(node, ast.Attribute) and
                        isinstance(node.value, ast.Name) and
                        node.value.id in aliases and
                        node.attr.startswith('_') and
                        not node.attr.startswith('__')):
                    raise AssertionError('%s uses %s.%s' % (
                        module.__name__, node.value.id, node.attr))

    def test_primitives_import_no_network(self):
        tree = ast.parse(inspect.getsource(primitives))
        imported = [node.module if isinstance(node, ast.ImportFrom) else
                    alias.name for node in ast.walk(tree)
                    if isinstance(node, (ast.Import, ast.ImportFrom))
                    for alias in node.names]
        assert not [name for name in imported
                    if name and name.startswith('slimnets')]
