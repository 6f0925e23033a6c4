"""The core, checked on every machine from tests/data alone (no ../shared).

See tests/data/PROVENANCE.md for where each golden value comes from.
"""

import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from slimnets import checkpoints
from slimnets import mobilenet_v1
from slimnets import slim

import golden
import reference

DOCUMENT, ARRAYS = golden.load()


@pytest.mark.parametrize('name', sorted(golden.CONFIGURATIONS))
def test_names_shapes_and_logits(name):
    built = golden.build(name)
    variables = [[v.op.name, v.shape.as_list()] for v in built['variables']]
    assert variables == DOCUMENT['configurations'][name]['variables']
    error = reference.scaled_error(golden.logits(built),
                                   ARRAYS['logits/' + name])
    assert error < reference.TOLERANCE, error


def test_the_golden_set_stays_small():
    size = sum(os.path.getsize(os.path.join(golden.DATA, n))
               for n in os.listdir(golden.DATA))
    assert size < 2 * 1024 * 1024, size


def test_real_weights_reproduce_the_published_top3(tmp_path):
    """Google's v1 0.25_128 on cat.bmp: ../shared/README.md's table gives
    283 tiger cat 0.29, 286 Egyptian cat 0.24, 282 tabby 0.20."""
    weights = golden.real_weights(ARRAYS)
    with tf.Graph().as_default():
        images = tf.placeholder(tf.float32, [1, 128, 128, 3])
        with slim.arg_scope(mobilenet_v1.mobilenet_v1_arg_scope(
                is_training=False)):
            _, end_points = mobilenet_v1.mobilenet_v1(
                images, num_classes=1001, is_training=False,
                depth_multiplier=0.25)
        variables = tf.global_variables()
        assert sorted(v.op.name for v in variables) == sorted(weights)
        saver = tf.train.Saver()
        with tf.Session() as sess:
            sess.run([v.assign(weights[v.op.name]) for v in variables])
            prefix = saver.save(sess, str(tmp_path / 'model.ckpt'),
                                write_meta_graph=False)
            probabilities = sess.run(end_points['Predictions'], {
                images: ARRAYS['real/cat_128'][np.newaxis]})[0]
    top3 = np.argsort(-probabilities)[:3]
    assert top3.tolist() == [283, 286, 282]
    np.testing.assert_allclose(probabilities[top3], [0.29, 0.24, 0.20],
                               atol=0.02)
    identity = checkpoints.identify(checkpoints.variable_shapes(prefix))
    assert (identity.family, identity.depth_multiplier) == ('v1', 0.25)
