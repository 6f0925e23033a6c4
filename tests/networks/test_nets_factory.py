"""The nets factory, checked like the reference's own factory test."""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from slimnets import nets_factory

CONTRACT_KEYS = {
    'mobilenet_v1', 'mobilenet_v1_075', 'mobilenet_v1_050', 'mobilenet_v1_025',
    'mobilenet_v2', 'mobilenet_v2_140', 'mobilenet_v2_035',
    'mobilenet_v3_small', 'mobilenet_v3_large',
    'mobilenet_v3_small_minimalistic', 'mobilenet_v3_large_minimalistic',
    'mobilenet_edgetpu', 'mobilenet_edgetpu_075',
}


def test_keys():
    assert set(nets_factory.networks_map) == CONTRACT_KEYS | {
        'mobilenet_v2_050'}
    assert set(nets_factory.arg_scopes_map) == set(nets_factory.networks_map)


def test_unknown_name():
    with pytest.raises(ValueError, match='mobilenet_v9'):
        nets_factory.get_network_fn('mobilenet_v9', 10)


@pytest.mark.parametrize('name', sorted(nets_factory.networks_map))
def test_every_network_classifies_a_batch_of_two(name):
    num_classes = 7
    network_fn = nets_factory.get_network_fn(name, num_classes,
                                             weight_decay=0.001)
    size = network_fn.default_image_size
    assert size == 224
    with tf.Graph().as_default():
        images = tf.placeholder(tf.float32, [2, size, size, 3])
        # The full network is not the point here: keep it small.
        logits, end_points = network_fn(images, depth_multiplier=0.25)
        assert logits.shape.as_list() == [2, num_classes]
        assert isinstance(end_points, dict)
        assert end_points['Predictions'].shape.as_list() == [2, num_classes]
        assert tf.get_collection(tf.GraphKeys.REGULARIZATION_LOSSES)
        # is_training defaults to False: no batch-norm updates.
        assert not tf.get_collection(tf.GraphKeys.UPDATE_OPS)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            probabilities = sess.run(end_points['Predictions'],
                                     {images: np.zeros([2, size, size, 3])})
    np.testing.assert_allclose(probabilities.sum(axis=1), [1, 1], rtol=1e-5)


def test_training_mode():
    network_fn = nets_factory.get_network_fn('mobilenet_v2_035', 3,
                                             is_training=True)
    with tf.Graph().as_default():
        network_fn(tf.zeros([2, 96, 96, 3]))
        assert tf.get_collection(tf.GraphKeys.UPDATE_OPS)
