"""Real Google-trained weights from ../shared/fixtures/pretrained.

The checkpoints were recovered from Google's TFLite models; they restore
with a plain Saver and must reproduce the reference's predictions.
"""

import os

import numpy as np
import pytest
import tensorflow as tf2
import tensorflow.compat.v1 as tf

from slimnets import mobilenet_v1
from slimnets import slim
from slimnets.mobilenet import mobilenet_v2
from slimnets.mobilenet import mobilenet_v3

import reference

IMAGES = ('cat.bmp', 'grace_hopper.bmp', 'bird.bmp')

# ../shared/README.md: top-3 (label index, probability) of the float
# checkpoints, input resized bilinearly and scaled as (x - 127.5) / 127.5.
V1_EXPECTED_TOP3 = {
    ('0.25', 128): {
        'cat.bmp': [(283, 0.29), (286, 0.24), (282, 0.20)],
        'grace_hopper.bmp': [(401, 0.19), (835, 0.12), (458, 0.08)],
        'bird.bmp': [(20, 0.39), (129, 0.22), (17, 0.11)],
    },
    ('0.75', 192): {
        'cat.bmp': [(282, 0.43), (283, 0.36), (286, 0.18)],
        'grace_hopper.bmp': [(653, 0.64), (835, 0.08), (466, 0.05)],
        'bird.bmp': [(20, 0.998)],
    },
}


def load_images(size):
    """The three fixture images, bilinearly resized, scaled to [-1, 1].

    The resize is TF2's (half-pixel centres), as used to make the table.
    """
    batch = []
    for name in IMAGES:
        path = reference.require(os.path.join(reference.PRETRAINED, name))
        with open(path, 'rb') as handle:
            image = tf.io.decode_bmp(handle.read(), channels=3)
        resized = tf2.image.resize(tf.cast(image, tf.float32), [size, size])
        batch.append(((resized - 127.5) / 127.5).numpy())
    return np.stack(batch)


def predict(build, checkpoint, images):
    with tf.Graph().as_default():
        inputs = tf.placeholder(tf.float32, [None] + list(images.shape[1:]))
        logits, end_points = build(inputs)
        saver = tf.train.Saver()
        with tf.Session() as sess:
            saver.restore(sess, checkpoint)
            return sess.run([logits, end_points['Predictions']],
                            {inputs: images})


@pytest.mark.parametrize('depth,size', sorted(V1_EXPECTED_TOP3))
def test_mobilenet_v1_top3(depth, size):
    checkpoint = os.path.join(reference.PRETRAINED, 'mobilenet_v1',
                              '%s_%d' % (depth, size), 'model.ckpt')
    reference.require(checkpoint + '.index')

    def build(images):
        with slim.arg_scope(
                mobilenet_v1.mobilenet_v1_arg_scope(is_training=False)):
            return mobilenet_v1.mobilenet_v1(
                images, num_classes=1001, depth_multiplier=float(depth),
                is_training=False)

    _, probabilities = predict(build, checkpoint, load_images(size))
    for image, row in zip(IMAGES, probabilities):
        expected = V1_EXPECTED_TOP3[(depth, size)][image]
        top = np.argsort(-row)[:len(expected)]
        assert [int(i) for i in top] == [label for label, _ in expected], image
        for label, probability in expected:
            assert abs(row[label] - probability) < 0.02, (image, label)


@pytest.mark.parametrize('family', ['mobilenet_v2', 'mobilenet_v3_small'])
def test_v2_and_v3_small_reproduce_expected_logits(family):
    folder = os.path.join(reference.PRETRAINED, family, '1.0_224')
    reference.require(os.path.join(folder, 'expected.npz'))
    expected = np.load(os.path.join(folder, 'expected.npz'))
    network, scope = {
        'mobilenet_v2': (mobilenet_v2.mobilenet, mobilenet_v2.training_scope),
        'mobilenet_v3_small': (mobilenet_v3.small,
                               mobilenet_v3.training_scope),
    }[family]

    def build(images):
        with slim.arg_scope(scope(is_training=False)):
            return network(images)

    logits, probabilities = predict(build, os.path.join(folder, 'model.ckpt'),
                                    expected['inputs'])
    assert reference.scaled_error(logits, expected['logits']) < 1e-4
    assert reference.scaled_error(probabilities,
                                  expected['probabilities']) < 1e-4
    np.testing.assert_array_equal(logits.argmax(1),
                                  expected['logits'].argmax(1))
