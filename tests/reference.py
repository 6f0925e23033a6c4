"""Helpers for reference-parity tests against ../shared/fixtures/reference.

Parity means: build the configuration with slimnets, compare variables,
endpoints and collection sizes with the manifest, restore the fixture
checkpoint with a plain `Saver()` and reproduce `io.npz`.
"""

import json
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO_ROOT), 'shared')
REFERENCE = os.path.join(SHARED, 'fixtures', 'reference')
PRETRAINED = os.path.join(SHARED, 'fixtures', 'pretrained')

# Outputs are compared as max|a - b| / max(1, max|reference|).
TOLERANCE = 1e-4


def require(path):
    """Skips the calling test when a ../shared fixture is absent."""
    if not os.path.exists(path):
        pytest.skip('fixture %s is absent: the reference fixtures live in '
                    '../shared beside the checkout (not in this tree)' % path)
    return path


def fixture_dir(name):
    return require(os.path.join(REFERENCE, name))


def load_manifest(name):
    with open(os.path.join(fixture_dir(name), 'manifest.json')) as handle:
        return json.load(handle)


def load_io(name):
    return dict(np.load(os.path.join(fixture_dir(name), 'io.npz')))


def scaled_error(actual, expected):
    """max |actual - expected| relative to the reference's magnitude."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = max(1.0, float(np.max(np.abs(expected))) if expected.size else 1.0)
    return float(np.max(np.abs(actual - expected))) / scale if actual.size else 0.0


def shape_list(tensor):
    return [d if d is not None else None for d in tensor.shape.as_list()]


class BuiltGraph(object):
    """A graph built from a manifest's input shape by `build(x) -> (net, eps)`."""

    def __init__(self, manifest, build, input_shape=None):
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.inputs = tf.placeholder(
                tf.float32, input_shape or manifest['input_shape'], name='x')
            self.net, self.end_points = build(self.inputs)
            self.saver = tf.train.Saver()


def assert_structure(manifest, built):
    """Variables, endpoints and collection sizes equal the manifest's."""
    with built.graph.as_default():
        global_vars = [[v.op.name, v.shape.as_list(), v.dtype.base_dtype.name]
                       for v in tf.global_variables()]
        assert global_vars == manifest['global_variables']
        for collection, listed in (('trainable_variables', tf.trainable_variables),
                                   ('model_variables', tf.model_variables)):
            if collection in manifest:
                assert [v.op.name for v in listed()] == manifest[collection]
        assert len(tf.get_collection(tf.GraphKeys.REGULARIZATION_LOSSES)) == \
            manifest['regularization_losses']
        assert len(tf.get_collection(tf.GraphKeys.UPDATE_OPS)) == \
            manifest['update_ops']
        if 'endpoints' in manifest:
            endpoints = {k: shape_list(v) for k, v in built.end_points.items()}
            assert endpoints == manifest['endpoints']
        if 'output_shape' in manifest:
            assert shape_list(built.net) == manifest['output_shape']
        if 'num_params' in manifest:
            count = sum(int(np.prod(v.shape.as_list()))
                        for v in tf.trainable_variables())
            assert count == manifest['num_params']


def inference_errors(name, built):
    """Restores the fixture checkpoint and compares every output in io.npz.

    Returns:
      {output name: scaled error}.
    """
    io = load_io(name)
    checkpoint = os.path.join(fixture_dir(name), 'model.ckpt')
    errors = {}
    with tf.Session(graph=built.graph) as sess:
        built.saver.restore(sess, checkpoint)
        fetches = {'net': built.net}
        for key in io:
            if key.startswith('endpoint/'):
                fetches[key] = built.end_points[key[len('endpoint/'):]]
        values = sess.run(fetches, {built.inputs: io['input']})
    for key, value in values.items():
        errors[key] = scaled_error(value, io[key])
    return errors


def training_errors(name, built):
    """Compares a training-mode graph with a `train_*` fixture.

    Checks the feature endpoint (batch statistics), the regularization
    total, the gradient of mean(square(feature)) with respect to the first
    trainable variable, and every moving statistic after running UPDATE_OPS
    once from the checkpoint.

    Returns:
      {quantity: scaled error}.
    """
    manifest = load_manifest(name)
    io = load_io(name)
    checkpoint = os.path.join(fixture_dir(name), 'model.ckpt')
    with built.graph.as_default():
        feature = built.end_points[manifest['feature_endpoint']]
        first = [v for v in tf.trainable_variables()
                 if v.op.name == manifest['first_trainable_variable']][0]
        gradient = tf.gradients(tf.reduce_mean(tf.square(feature)), first)[0]
        regularization = tf.add_n(
            tf.get_collection(tf.GraphKeys.REGULARIZATION_LOSSES))
        updates = tf.group(*tf.get_collection(tf.GraphKeys.UPDATE_OPS))
        moving = {v.op.name: v for v in tf.global_variables()
                  if 'moving/' + v.op.name in io}
    feed = {built.inputs: io['input']}
    with tf.Session(graph=built.graph) as sess:
        built.saver.restore(sess, checkpoint)
        values = sess.run({'feature': feature, 'first_variable_grad': gradient,
                           'regularization_total': regularization}, feed)
        sess.run(updates, feed)
        values.update({'moving/' + k: v for k, v in
                       sess.run(moving).items()})
    assert len(moving) == len([k for k in io if k.startswith('moving/')])
    return {key: scaled_error(value, io[key]) for key, value in values.items()}


def check_inference_fixture(name, build):
    """Structure and every output of an inference fixture; returns the
    largest scaled error."""
    manifest = load_manifest(name)
    built = BuiltGraph(manifest, build)
    assert_structure(manifest, built)
    errors = inference_errors(name, built)
    assert len(errors) == 1 + len(manifest['endpoints'])
    worst = max(errors, key=errors.get)
    assert errors[worst] < TOLERANCE, (worst, errors[worst])
    return errors[worst]


def check_training_fixture(name, build):
    """Structure, batch-statistics outputs, regularization, gradient and
    moving statistics of a `train_*` fixture; returns the largest error."""
    manifest = load_manifest(name)
    built = BuiltGraph(manifest, build)
    assert_structure(manifest, built)
    errors = training_errors(name, built)
    worst = max(errors, key=errors.get)
    assert errors[worst] < TOLERANCE, (worst, errors[worst])
    return errors[worst]


def check_structure_fixture(name, build):
    """Names, shapes and endpoints of a full-size (checkpoint-less) fixture."""
    manifest = load_manifest(name)
    assert_structure(manifest, BuiltGraph(manifest, build))
