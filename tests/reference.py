"""Helpers for reference-parity tests against ../shared/fixtures/reference.

Parity means: build the configuration with slimnets, compare variables,
endpoints and collection sizes with the manifest, restore the fixture
checkpoint with a plain `Saver()` and reproduce `io.npz`.

Tolerances, and the rule behind them.  Every tolerance sits above a noise
floor measured on CPUs whose kernels sum in different orders; none is tuned
to one machine.  Errors are scaled: max|a - b| / max(1, max|reference|).

* Inference fixtures: TOLERANCE = 1e-4.  Measured: at most 4.7e-7 (v3
  heads), 0 elsewhere; float32 round-off of these well-conditioned
  networks stays below 1e-5 under batch reordering and oneDNN on/off.
* Training fixtures, well-conditioned quantities (moving statistics after
  one update, the regularization total): TOLERANCE = 1e-4.  Measured: at
  most 7.3e-7.
* Training fixtures, ill-conditioned quantities: the feature endpoint and
  the gradient of mean(square(feature)) with respect to the first variable
  pass through 14-27 training-mode batch norms.  Their float32 values move
  with the summation order: against a float64 evaluation of the same
  network and checkpoint (machine-independent to about 1e-11), float32
  results deviate by up to 1.3e-4 (feature) and 1.3e-2 (gradient), measured
  over batch order reversed x oneDNN on/off on AMD EPYC (v1 0.25_128 is the
  worst; v2 0.35_96: 4.7e-5 / 3.0e-3; v3-small: 1.2e-6 / 6e-8).  The
  fixture itself is such a float32 result (5.9e-3 from float64 on the v1
  gradient).  So both the fixture and our float32 graph are compared with
  our float64 evaluation, at three times the largest measured deviation:
  FEATURE_TOLERANCE = 4e-4 and GRADIENT_TOLERANCE = 4e-2.  A wrong formula
  (say, Bessel-corrected variance in the normalization) moves the feature
  by about 1e-2, far outside.
"""

import json
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from slimnets import slim

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# $SLIMNETS_SHARED names another folder; set to nothing it hides ../shared,
# so a run can see the suite as a stranger's clone does.
SHARED = os.environ.get('SLIMNETS_SHARED',
                        os.path.join(os.path.dirname(REPO_ROOT), 'shared'))
SKIP_REASON = ('needs ../shared (the reference and pretrained fixtures, kept '
               'beside the checkout, not in it)')
REFERENCE = os.path.join(SHARED, 'fixtures', 'reference')
PRETRAINED = os.path.join(SHARED, 'fixtures', 'pretrained')

# Outputs are compared as max|a - b| / max(1, max|reference|); see the
# module docstring for how each tolerance follows from a measured floor.
TOLERANCE = 1e-4
FEATURE_TOLERANCE = 4e-4
GRADIENT_TOLERANCE = 4e-2
ILL_CONDITIONED = {'feature': FEATURE_TOLERANCE,
                   'first_variable_grad': GRADIENT_TOLERANCE}


def require(path):
    """Skips the calling test when a ../shared fixture is absent."""
    if not SHARED or not os.path.exists(path):
        pytest.skip(SKIP_REASON)
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

    def __init__(self, manifest, build, input_shape=None, dtype=tf.float32):
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.inputs = tf.placeholder(
                dtype, input_shape or manifest['input_shape'], name='x')
            if dtype == tf.float32:
                self.net, self.end_points = build(self.inputs)
            else:  # the fused kernel is float32-only
                with slim.arg_scope([slim.batch_norm], fused=False):
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


def _training_fetches(manifest, built):
    feature = built.end_points[manifest['feature_endpoint']]
    first = [v for v in tf.trainable_variables()
             if v.op.name == manifest['first_trainable_variable']][0]
    gradient = tf.gradients(tf.reduce_mean(tf.square(feature)), first)[0]
    return {'feature': feature, 'first_variable_grad': gradient}


def float64_training_values(name, build):
    """The feature and first-variable gradient of a `train_*` fixture's
    network, evaluated in float64 from the fixture checkpoint (cast)."""
    manifest = load_manifest(name)
    io = load_io(name)
    reader = tf.train.load_checkpoint(
        os.path.join(fixture_dir(name), 'model.ckpt'))
    built = BuiltGraph(manifest, build, dtype=tf.float64)
    with built.graph.as_default():
        fetches = _training_fetches(manifest, built)
        loads = [v.assign(reader.get_tensor(v.op.name).astype(np.float64))
                 for v in tf.global_variables()]
    with tf.Session(graph=built.graph) as sess:
        sess.run(loads)
        return sess.run(fetches, {built.inputs: io['input'].astype(np.float64)})


def training_errors(name, built, build):
    """Compares a training-mode graph with a `train_*` fixture.

    Checks the feature endpoint (batch statistics), the regularization
    total, the gradient of mean(square(feature)) with respect to the first
    trainable variable, and every moving statistic after running UPDATE_OPS
    once from the checkpoint.  The two ill-conditioned quantities are
    compared through a float64 evaluation (module docstring): both the
    fixture and our float32 value against it.

    Returns:
      {quantity: scaled error}; the ill-conditioned ones appear twice,
      as 'fixture~float64/<name>' and 'float32~float64/<name>'.
    """
    manifest = load_manifest(name)
    io = load_io(name)
    checkpoint = os.path.join(fixture_dir(name), 'model.ckpt')
    with built.graph.as_default():
        fetches = _training_fetches(manifest, built)
        fetches['regularization_total'] = tf.add_n(
            tf.get_collection(tf.GraphKeys.REGULARIZATION_LOSSES))
        updates = tf.group(*tf.get_collection(tf.GraphKeys.UPDATE_OPS))
        moving = {v.op.name: v for v in tf.global_variables()
                  if 'moving/' + v.op.name in io}
    feed = {built.inputs: io['input']}
    with tf.Session(graph=built.graph) as sess:
        built.saver.restore(sess, checkpoint)
        values = sess.run(fetches, feed)
        sess.run(updates, feed)
        values.update({'moving/' + k: v for k, v in
                       sess.run(moving).items()})
    assert len(moving) == len([k for k in io if k.startswith('moving/')])
    exact = float64_training_values(name, build)
    errors = {}
    for key, value in values.items():
        if key in ILL_CONDITIONED:
            errors['fixture~float64/' + key] = scaled_error(io[key], exact[key])
            errors['float32~float64/' + key] = scaled_error(value, exact[key])
        else:
            errors[key] = scaled_error(value, io[key])
    return errors


def tolerance_of(quantity):
    """The tolerance for an error key of `training_errors`."""
    return ILL_CONDITIONED.get(quantity.rpartition('/')[2]
                               if '~' in quantity else None, TOLERANCE)


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
    errors = training_errors(name, built, build)
    failures = {k: v for k, v in errors.items() if v >= tolerance_of(k)}
    assert not failures, failures
    return max(errors.values())


def check_structure_fixture(name, build):
    """Names, shapes and endpoints of a full-size (checkpoint-less) fixture."""
    manifest = load_manifest(name)
    assert_structure(manifest, BuiltGraph(manifest, build))
