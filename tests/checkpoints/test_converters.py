"""Converters: TFLite -> checkpoint, frozen graph -> checkpoint, and Keras
Applications <-> checkpoint."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf2

from slimnets import inference
from slimnets import optimize
from slimnets import runtimes
from slimnets.checkpoints import CheckpointError
from slimnets.checkpoints import converters
from slimnets.checkpoints import keras_weights

import helpers
import reference

TFLITE_FILES = {
    'mobilenet_v1_0.25_128_quant.tflite': 'mobilenet_v1/0.25_128',
    'mobilenet_v1_0.75_192_quant.tflite': 'mobilenet_v1/0.75_192',
    'mobilenet_v2_1.0_224_quant.tflite': 'mobilenet_v2/1.0_224',
    'mobilenet_v3_small_1.0_224_uint8.tflite': 'mobilenet_v3_small/1.0_224',
}


@pytest.mark.parametrize('tflite', sorted(TFLITE_FILES))
def test_tflite_reproduces_the_recovered_checkpoints(tflite, tmp_path):
    path = reference.require(os.path.join(reference.PRETRAINED, tflite))
    stored = os.path.join(reference.PRETRAINED, TFLITE_FILES[tflite],
                          'model.ckpt')
    prefix, identity = converters.tflite_to_float_checkpoint(
        path, str(tmp_path / 'model.ckpt'))
    ours = tf2.train.load_checkpoint(prefix)
    theirs = tf2.train.load_checkpoint(stored)
    expected = {k for k in theirs.get_variable_to_shape_map()
                if k != 'global_step'}
    assert set(ours.get_variable_to_shape_map()) == expected
    worst = max(float(np.max(np.abs(ours.get_tensor(k) - theirs.get_tensor(k))))
                for k in expected)
    assert worst <= 1e-6
    assert identity.num_classes == 1001


def _spec_and_logits(checkpoint, size, images):
    spec, prefix = inference.model_spec(None, checkpoint, size)
    graph_def, _ = optimize.frozen_inference_graph(spec, prefix, fold=False)
    model = runtimes.TensorFlowRuntime(graph_def, rewrite=False)
    try:
        return spec, model.run(images, 'logits')
    finally:
        model.close()


FROZEN_FIXTURES = ['v1_025_128', 'v2_035_96', 'v3_small_050_96_c10',
                   'v3_edgetpu_050_96']


@pytest.mark.parametrize('name', FROZEN_FIXTURES)
def test_frozen_graph_round_trip(name, tmp_path):
    checkpoint = os.path.join(reference.fixture_dir(name), 'model.ckpt')
    spec, prefix = inference.model_spec(None, checkpoint, 96)
    images = np.random.RandomState(0).uniform(-1, 1, [2, 96, 96, 3]).astype(
        np.float32)
    # Frozen under the variables' own names: every value comes back exactly.
    plain, _ = optimize.frozen_inference_graph(spec, prefix, fold=False)
    recovered, identity = converters.frozen_graph_to_checkpoint(
        plain, str(tmp_path / 'plain.ckpt'))
    assert identity.network == spec.network
    ours = tf2.train.load_checkpoint(recovered)
    theirs = tf2.train.load_checkpoint(checkpoint)
    assert set(ours.get_variable_to_shape_map()) == set(
        theirs.get_variable_to_shape_map())
    for key in theirs.get_variable_to_shape_map():
        np.testing.assert_array_equal(ours.get_tensor(key),
                                      theirs.get_tensor(key))
    # Folded (slimnets' export): batch norm comes back as identity + bias.
    folded, _ = optimize.frozen_inference_graph(spec, prefix)
    path = str(tmp_path / 'folded.pb')
    with open(path, 'wb') as handle:
        handle.write(folded.SerializeToString())
    recovered, _ = converters.frozen_graph_to_checkpoint(
        path, str(tmp_path / 'folded.ckpt'))
    _, expected = _spec_and_logits(checkpoint, 96, images)
    _, actual = _spec_and_logits(recovered, 96, images)
    assert reference.scaled_error(actual, expected) < 1e-5


def test_frozen_graph_errors(tmp_path):
    bad = tmp_path / 'bad.pb'
    bad.write_bytes(b'\xff\xff not a graph')
    with pytest.raises(CheckpointError, match='not a frozen GraphDef'):
        converters.frozen_graph_to_checkpoint(str(bad), str(tmp_path / 'x'))
    with pytest.raises(CheckpointError, match='not a TFLite model'):
        converters.tflite_to_float_checkpoint(str(bad), str(tmp_path / 'x'))
    assert not list(tmp_path.glob('x*'))


KERAS_MODELS = {
    'v1': (keras.applications.MobileNet, dict(alpha=0.25), 128),
    'v2': (keras.applications.MobileNetV2, dict(alpha=0.35), 96),
    'v3_small': (keras.applications.MobileNetV3Small,
                 dict(alpha=0.75, include_preprocessing=False), 96),
    'v3_large_minimalistic': (keras.applications.MobileNetV3Large,
                              dict(minimalistic=True,
                                   include_preprocessing=False), 96),
}


def _keras(name, **overrides):
    function, kwargs, size = KERAS_MODELS[name]
    kwargs = dict(kwargs, **overrides)
    return function(weights=None, input_shape=(size, size, 3),
                    classifier_activation=None, **kwargs), size


@pytest.mark.parametrize('name', sorted(KERAS_MODELS))
def test_keras_to_slim_and_back(name, tmp_path):
    model, size = _keras(name)
    helpers.randomize(model)
    images = np.random.RandomState(1).uniform(-1, 1, [2, size, size, 3]).astype(
        np.float32)
    keras_logits = np.asarray(model(images, training=False)).reshape(2, -1)
    prefix, _ = keras_weights.keras_to_checkpoint(model,
                                                  str(tmp_path / 'k.ckpt'))
    _, slim_logits = _spec_and_logits(prefix, size, images)
    # Slim has the background class in front, never the most likely one.
    assert reference.scaled_error(slim_logits[:, 1:], keras_logits) < 1e-5
    assert (slim_logits.argmax(1) > 0).all()
    fresh, _ = _keras(name)
    keras_weights.checkpoint_to_keras(prefix, fresh)
    again = np.asarray(fresh(images, training=False)).reshape(2, -1)
    np.testing.assert_allclose(again, keras_logits, atol=1e-6)


@pytest.mark.parametrize('fixture,keras_name,overrides,tolerance', [
    ('reference/v1_025_128', 'v1', dict(classes=1000), 1e-5),
    ('reference/v2_035_96', 'v2', dict(classes=1000), 1e-5),
    # Keras v3 keeps the first convolution at 16 channels for every alpha,
    # slim scales it: only multipliers where both agree (0.75, 1.0) convert.
    # Keras gates squeeze-excite with relu6(x + 3) / 6, slim with
    # relu6(x + 3) * 0.16667: with real weights that shows at 1e-4.
    ('pretrained/mobilenet_v3_small/1.0_224', 'v3_small',
     dict(alpha=1.0, classes=1000), 1e-3),
])
def test_slim_checkpoint_into_keras(fixture, keras_name, overrides,
                                    tolerance):
    checkpoint = reference.require(os.path.join(
        reference.SHARED, 'fixtures', fixture, 'model.ckpt.index'))[:-6]
    model, size = _keras(keras_name, **overrides)
    keras_weights.checkpoint_to_keras(checkpoint, model)
    images = np.random.RandomState(2).uniform(-1, 1, [2, size, size, 3]).astype(
        np.float32)
    _, slim_logits = _spec_and_logits(checkpoint, size, images)
    keras_logits = np.asarray(model(images, training=False)).reshape(2, -1)
    if slim_logits.shape[1] == keras_logits.shape[1] + 1:
        slim_logits = slim_logits[:, 1:]
    assert reference.scaled_error(keras_logits, slim_logits) < tolerance
    np.testing.assert_array_equal(keras_logits.argmax(1),
                                  slim_logits.argmax(1))


def test_wrong_keras_architecture_is_refused_and_unchanged():
    checkpoint = os.path.join(reference.fixture_dir('v1_025_128'),
                              'model.ckpt')
    model, _ = _keras('v1', alpha=0.5)
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(CheckpointError, match='nothing was loaded'):
        keras_weights.checkpoint_to_keras(checkpoint, model)
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)
    v3_half = os.path.join(reference.fixture_dir('v3_small_050_96_c10'),
                           'model.ckpt')
    with pytest.raises(CheckpointError, match='MobilenetV3/Conv/weights'):
        keras_weights.checkpoint_to_keras(v3_half, _keras(
            'v3_small', alpha=0.5, classes=10)[0])
    with pytest.raises(CheckpointError, match='not a Keras Applications'):
        keras_weights.keras_family(keras.Sequential([keras.layers.Dense(2)]))
