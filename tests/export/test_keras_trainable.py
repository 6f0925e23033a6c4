"""Slim checkpoints as trainable Keras 3 models (`slimnets.keras_models`),
and back: inference parity with the slim graph, one training step against
slim's training graph, the slim -> Keras -> fine-tune -> slim round trip,
the trainable .keras export, and the refusals.

Figures measured on the TensorFlow backend (2-core CPU, oneDNN on, the
default), computed as the tests below compute them:

* inference, max |Keras logits - slim logits| (scaled by the logits'
  magnitude): generated calibrated checkpoints at 96 px, 4 images: v1 0.25
  9.8e-6 (5.6e-6), v2 0.35 2.2e-5 (4.3e-6), v3-small 0.75 1.7e-5 (1.3e-6),
  v3-large minimalistic 0.5 1.4e-5 (3.6e-6), EdgeTPU 0.5 3.0e-5 (9.5e-6);
  slim's own folded graph is 2e-5 to 5e-5 off its unfolded one.  Google's
  checkpoints on the shared photos: v1 0.25_128 0, v2 1.0_224 0,
  v3-small 1.0_224 9.8e-6 (1.0e-6); same top-1 everywhere.
* one SGD step (learning rate 0.1, weight decay 4e-3, batch 4, dropout
  off): Keras equals slim built with the non-fused batch norm to 1.2e-7 on
  the weights (v3-small 1.9e-6, EdgeTPU 7.4e-6 for steps of 1 to 10) and
  2.4e-7 on the moving statistics.  slim's default fused kernel moves the
  weights differently from its own non-fused path, and Keras matches the
  latter: with oneDNN on, the fused gradient is the one that is off (v1
  0.25_128 on the photos: 1.7 from a float64 evaluation, against 0.033 for
  Keras and slim's non-fused path; with TF_ENABLE_ONEDNN_OPTS=0 all three
  are within 0.03 of it).  The fused kernel also updates the moving
  variance with the unbiased batch variance (n / (n - 1)) where Keras uses
  the biased one (up to 3.4e-2 apart on v3-small 1.0_224's first layers):
  Keras' moving variance corrected by n / (n - 1) equals slim's to 3e-5
  (real weights) and 5e-7 (generated).

Other backends (`test_other_backend_when_installed`, generated checkpoints,
4 images at 96 px): logits 1.9e-6 to 1.1e-5 off slim's on JAX 0.10.2, 2.3e-6
to 1.5e-5 on PyTorch 2.14.1; the whole SGD step (every weight and moving
statistic as one vector) 4.2e-6 (v3-small) to 0.027 (v2) of the step off
the TensorFlow backend's on JAX, 4.3e-6 to 0.027 on PyTorch, where the
TensorFlow backend itself, given the batch in reverse order, is 4.7e-6 to
0.021 off (batch norm over 4 images of 3x3 pixels amplifies round-off); at
most 2.3x that floor (EdgeTPU on PyTorch).
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf2
import tensorflow.compat.v1 as tf

from slimnets import export
from slimnets import inference
from slimnets import keras_models
from slimnets import optimize
from slimnets import registry
from slimnets import runtimes
from slimnets import slim
from slimnets.checkpoints import keras_weights
from slimnets.errors import CheckpointError
from slimnets.errors import ExportError
from slimnets.inference import models

import golden
import reference
import small_models

SIZE = 96
CLASSES = 10
FAMILIES = {
    'v1': ('mobilenet_v1', 0.25),
    'v2': ('mobilenet_v2_035', 0.35),
    'v3_small': ('mobilenet_v3_small', 0.75),
    'v3_large_minimalistic': ('mobilenet_v3_large_minimalistic', 0.5),
    'edgetpu': ('mobilenet_edgetpu', 0.5),
}
# float32 round-off of logits through ~50 layers of a calibrated network,
# relative to the logits' magnitude (measured up to 9.5e-6, module doc).
INFERENCE_TOLERANCE = 3e-5
ROUND_OFF = 1e-5


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    """{family: (ModelSpec, prefix)}: calibrated generated checkpoints."""
    root = tmp_path_factory.mktemp('keras_trainable')
    made = {}
    for family, (network, depth) in FAMILIES.items():
        made[family] = small_models.calibrated_checkpoint(
            str(root / family), network=network, depth=depth, size=SIZE,
            num_classes=CLASSES)
    return made


def slim_logits(spec, prefix, images, fold=False):
    """The slim inference graph's logits (restored; folded or not)."""
    graph_def, _ = optimize.frozen_inference_graph(spec, prefix, fold=fold)
    model = runtimes.TensorFlowRuntime(graph_def, rewrite=False)
    try:
        return model.run(images, 'logits')
    finally:
        model.close()


def keras_logits(model, images):
    return np.asarray(model(images, training=False))


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_inference_logits_equal_the_slim_graph(checkpoints, family):
    spec, prefix = checkpoints[family]
    model = keras_models.keras_model(prefix, image_size=SIZE)
    images = small_models.smooth_images(4, SIZE, seed=5)
    expected = slim_logits(spec, prefix, images)
    actual = keras_logits(model, images)
    assert actual.shape == (4, CLASSES)
    error = reference.scaled_error(actual, expected)
    folded = reference.scaled_error(slim_logits(spec, prefix, images, True),
                                    expected)
    assert error < INFERENCE_TOLERANCE, (error, folded)
    # The same order as slim's own folded graph is off its unfolded one.
    assert error < max(20 * folded, ROUND_OFF), (error, folded)
    # Only standard Keras layers, named as Keras Applications names them.
    assert {type(layer).__module__.split('.')[0] for layer in model.layers} \
        == {'keras'}
    names = {layer.name for layer in model.layers}
    expected_names = {'v1': {'conv1', 'conv1_bn', 'conv_dw_1_bn',
                             'conv_pw_13', 'conv_preds'},
                      'v2': {'Conv1', 'bn_Conv1', 'expanded_conv_depthwise',
                             'block_16_project_BN', 'Conv_1_bn',
                             'predictions'}}.get(
        family, {'conv', 'conv_bn', 'expanded_conv_1_expand_bn', 'logits'})
    assert expected_names <= names


@pytest.mark.parametrize('family,options', [
    ('v1', {'output_stride': 8, 'global_pool': True}),
    ('v1', {'use_explicit_padding': True}),
    ('v2', {'output_stride': 16}),
    ('v3_small', {'use_explicit_padding': True}),
])
def test_output_stride_and_explicit_padding(checkpoints, family, options):
    """Atrous convolutions (SpaceToBatchND around the convolution in the
    graph) become dilated Keras convolutions; explicit padding stays."""
    spec, prefix = checkpoints[family]
    spec = spec._replace(kwargs=dict(spec.kwargs, **options))
    model = keras_models.build(spec, prefix)
    images = small_models.smooth_images(2, SIZE, seed=8)
    assert reference.scaled_error(keras_logits(model, images), slim_logits(
        spec, prefix, images)) < INFERENCE_TOLERANCE
    if 'output_stride' in options:
        assert max(max(getattr(layer, 'dilation_rate', (1,))) for layer in
                   model.layers) == 32 // options['output_stride']


def test_layers_and_weights_are_keras_applications(checkpoints):
    """Where Keras Applications has the architecture (v1, v2 at inputs that
    are multiples of 32), its model has the same weighted layers, and with
    our model's weights it computes the same logits."""
    images = small_models.smooth_images(2, SIZE, seed=6)
    for family, application in (('v1', keras.applications.MobileNet),
                                ('v2', keras.applications.MobileNetV2)):
        spec, prefix = checkpoints[family]
        ours = keras_models.build(spec, prefix)
        theirs = application(weights=None, input_shape=(SIZE, SIZE, 3),
                             alpha=FAMILIES[family][1], classes=CLASSES,
                             classifier_activation=None)
        our_layers = {layer.name: layer for layer in ours.layers
                      if layer.weights}
        their_layers = {layer.name: layer for layer in theirs.layers
                        if layer.weights}
        assert sorted(our_layers) == sorted(their_layers)
        for name, layer in their_layers.items():
            # v2's head is a Dense there, a 1x1 Conv2D here.
            layer.set_weights([w.reshape(t.shape) for w, t in zip(
                our_layers[name].get_weights(), layer.get_weights())])
        np.testing.assert_allclose(
            np.asarray(theirs(images, training=False)).reshape(2, -1),
            keras_logits(ours, images), rtol=0, atol=1e-5)


@pytest.mark.parametrize('family', ['v1', 'v3_small', 'edgetpu'])
def test_checkpoint_to_keras_loads_what_the_model_holds(checkpoints,
                                                        family):
    """Both directions share one name map: `checkpoint_to_keras` fills a
    fresh model with the weights `keras_model` built it with, and
    `to_checkpoint` writes the checkpoint's variables back bit for bit."""
    spec, prefix = checkpoints[family]
    model = keras_models.build(spec, prefix)
    fresh = keras.models.clone_model(model)
    keras_weights.checkpoint_to_keras(prefix, fresh)
    for ours, loaded in zip(model.get_weights(), fresh.get_weights()):
        np.testing.assert_array_equal(ours, loaded)
    reader = tf.train.load_checkpoint(prefix)
    values = keras_weights.keras_to_variables(model, add_background=False)
    assert len(values) == len([n for n in reader.get_variable_to_shape_map()
                               if not n.endswith('global_step')])
    for name, value in values.items():
        np.testing.assert_array_equal(value, reader.get_tensor(name))


def _slim_training_step(spec, prefix, images, labels, learning_rate,
                        weight_decay, fused=None):
    """One SGD step of slim's training graph (dropout off): (total loss
    before, {variable: value after})."""
    family = registry.network(spec.network).family
    kwargs = dict(spec.kwargs)
    if family == 'v1':
        kwargs['dropout_keep_prob'] = 1.0
    with tf.Graph().as_default():
        arg_scope = registry.arg_scope_fn(spec.network)(
            weight_decay=weight_decay)
        with slim.arg_scope(arg_scope), \
                slim.arg_scope([slim.dropout], keep_prob=1.0), \
                slim.arg_scope([slim.batch_norm], fused=fused):
            logits, _ = registry.builder(spec.network)(
                tf.constant(images), num_classes=spec.num_classes,
                is_training=True, **kwargs)
        total = tf.losses.softmax_cross_entropy(tf.constant(labels), logits) \
            + tf.add_n(tf.losses.get_regularization_losses())
        with tf.control_dependencies(tf.get_collection(
                tf.GraphKeys.UPDATE_OPS)):
            step = tf.train.GradientDescentOptimizer(learning_rate).minimize(
                total)
        variables = {v.op.name: v for v in tf.global_variables()}
        with tf.Session() as sess:
            tf.train.Saver().restore(sess, prefix)
            before = sess.run(total)
            sess.run(step)
            return before, sess.run(variables)


@pytest.mark.reads_no_shared
@pytest.mark.parametrize('family', ['edgetpu', 'v1', 'v2', 'v3_small'])
def test_one_training_step_moves_the_weights_as_slim(checkpoints, family):
    spec, prefix = checkpoints[family]
    learning_rate, weight_decay, batch = 0.1, 0.004, 4
    images = small_models.smooth_images(batch, SIZE, seed=7)
    labels = np.eye(CLASSES, dtype=np.float32)[np.arange(batch) % CLASSES]
    model = keras_models.build(spec, prefix, weight_decay=weight_decay,
                               dropout_rate=0.0)
    initial = keras_weights.keras_to_variables(model, add_background=False)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    keras_loss = float(model.train_on_batch(images, labels))
    after = keras_weights.keras_to_variables(model, add_background=False)

    slim_loss, fused = _slim_training_step(spec, prefix, images, labels,
                                           learning_rate, weight_decay)
    _, plain = _slim_training_step(spec, prefix, images, labels,
                                   learning_rate, weight_decay, fused=False)
    # Same loss, regularisation included.
    assert abs(keras_loss - slim_loss) < ROUND_OFF * max(1.0, slim_loss)
    moved = max(float(np.abs(after[n] - initial[n]).max()) for n in after)
    assert moved > 1e-3
    for name, value in after.items():
        scale = max(1.0, float(np.abs(plain[name]).max()))
        # The non-fused batch norm: the same arithmetic, to round-off.
        assert np.abs(value - plain[name]).max() < ROUND_OFF * scale, name
        if name.endswith('moving_variance'):
            continue
        # The fused kernel: no farther than slim's own two paths differ.
        assert np.abs(value - fused[name]).max() <= np.abs(
            plain[name] - fused[name]).max() + ROUND_OFF * scale, name
    # The fused kernel updates the moving variance with the unbiased batch
    # variance: Keras' (biased) update, corrected, is slim's.
    for layer, scope, is_batch_norm in keras_weights.layer_scopes(model):
        if not is_batch_norm:
            continue
        count = batch * int(np.prod(layer.output.shape[1:3]))
        name = scope + '/moving_variance'
        decayed = layer.momentum * initial[name]
        corrected = decayed + (after[name] - decayed) * count / (count - 1.0)
        np.testing.assert_allclose(corrected, fused[name], rtol=1e-5,
                                   atol=1e-6, err_msg=name)


def test_weight_decay_and_batch_norm_options_are_slims(checkpoints):
    spec, prefix = checkpoints['v3_small']
    model = keras_models.build(spec, prefix, weight_decay=0.004)
    batch_norms = [layer for layer in model.layers
                   if isinstance(layer, keras.layers.BatchNormalization)]
    assert {layer.momentum for layer in batch_norms} == {0.997}
    assert {round(layer.epsilon, 6) for layer in batch_norms} == {0.001}
    decayed = [layer for layer in model.layers
               if getattr(layer, 'kernel_regularizer', None) is not None]
    assert decayed and all(type(layer).__name__ == 'Conv2D' for layer in decayed)
    assert {float(layer.kernel_regularizer.l2) for layer in decayed} == {0.002}
    assert [layer.rate for layer in model.layers
            if isinstance(layer, keras.layers.Dropout)] == [pytest.approx(0.2)]
    v1 = keras_models.build(*checkpoints['v1'], weight_decay=0)
    assert not v1.losses
    assert {layer.momentum for layer in v1.layers
            if isinstance(layer, keras.layers.BatchNormalization)} == {0.9997}
    assert keras_models.training_options('mobilenet_v1') == {
        'momentum': 0.9997, 'dropout_rate': pytest.approx(0.001)}


def _colour_dataset(root, size=48):
    """Three classes of noisy single-colour PNGs, 6 each."""
    rng = np.random.RandomState(0)
    for name, colour in {'blue': (40, 60, 200), 'green': (40, 180, 60),
                         'red': (200, 40, 40)}.items():
        os.makedirs(root / name)
        for index in range(6):
            pixels = np.clip(np.array(colour)[None, None] +
                             rng.normal(0, 30, (size, size, 3)), 0, 255)
            (root / name / ('%d.png' % index)).write_bytes(
                tf2.io.encode_png(pixels.astype(np.uint8)).numpy())
    return str(root)


@pytest.mark.reads_no_shared
def test_slim_train_then_keras_fine_tune_then_slim_again(tmp_path, cli):
    """slim (`slimnets train`, 3 classes) -> Keras -> 5 steps of `fit` ->
    slim checkpoint -> the slim graph's logits are the Keras model's."""
    data = _colour_dataset(tmp_path / 'colours')
    train_dir = str(tmp_path / 'run')
    trained = cli('train', '--train-dir', train_dir, '--data', data,
                  '--model', 'mobilenet_v1_025', '--max-steps', '3',
                  '--batch-size', '6', '--image-size', '64', '--no-progress')
    assert trained.returncode == 0, trained.stderr[-3000:]

    model = keras_models.keras_model(train_dir)
    assert model.output.shape[-1] == 3 and model.input.shape[1] == 64
    spec, source = models.model_spec(None, train_dir)
    images = small_models.smooth_images(10, 64, seed=3)
    labels = np.eye(3, dtype=np.float32)[np.arange(10) % 3]
    before = model.get_weights()
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    history = model.fit(images, labels, batch_size=2, epochs=1, verbose=0,
                        shuffle=False)
    assert len(history.history['loss']) == 1
    assert int(model.optimizer.iterations.numpy()) == 5
    assert max(float(np.abs(a - b).max())
               for a, b in zip(before, model.get_weights())) > 1e-4

    prefix, _ = keras_models.to_checkpoint(
        model, str(tmp_path / 'back' / 'model.ckpt'), spec=spec)
    assert models.read_model_file(prefix) == spec
    probe = small_models.smooth_images(4, 64, seed=4)
    expected = keras_logits(model, probe)
    np.testing.assert_allclose(slim_logits(spec, prefix, probe), expected,
                               rtol=0, atol=ROUND_OFF * max(
                                   1.0, np.abs(expected).max()))
    # ... and the legacy pipeline takes it: classify on the slim graph.
    classified = cli('classify', os.path.join(data, 'red', '0.png'),
                     '--checkpoint', prefix, '--top-k', '1',
                     '--runtime', 'tensorflow')
    assert classified.returncode == 0, classified.stderr[-3000:]
    assert source != prefix
    # ... quantization-aware training from it, and the integer TFLite file
    # of that (the phone and Edge TPU path), both unchanged.
    qat_dir = str(tmp_path / 'qat')
    quantized = cli('train', '--train-dir', qat_dir, '--data', data,
                    '--checkpoint', prefix, '--max-steps', '2',
                    '--batch-size', '6', '--quantize-delay', '0',
                    '--no-progress')
    assert quantized.returncode == 0, quantized.stderr[-3000:]
    tflite_path = str(tmp_path / 'qat_uint8.tflite')
    exported = cli('export', '--checkpoint', qat_dir, '--format', 'tflite',
                   '--output', tflite_path)
    assert exported.returncode == 0, exported.stderr[-3000:]
    with open(tflite_path, 'rb') as handle:
        interpreter = runtimes.tflite_interpreter(handle.read())
    detail = interpreter.get_input_details()[0]
    assert detail['dtype'] == np.uint8 and list(detail['shape']) == [
        1, 64, 64, 3]


def test_export_trainable_keras_opens_without_slimnets(checkpoints,
                                                       tmp_path, cli):
    spec, prefix = checkpoints['v3_small']
    output = str(tmp_path / 'v3.keras')
    exported = cli('export', '--checkpoint', prefix, '--format', 'keras',
                   '--trainable', '--image-size', str(SIZE), '--output', output)
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert 'trainable: batch norm unfolded' in exported.stdout
    assert 'batch norms folded' not in exported.stdout
    difference = float(exported.stdout.split('|probabilities - source| = ')[
        1].split(',')[0])
    assert difference < 1e-5
    images = small_models.smooth_images(2, SIZE, seed=9)
    np.save(str(tmp_path / 'images.npy'), images)
    script = (
        'import sys, numpy, keras\n'
        'model = keras.saving.load_model(sys.argv[1])\n'
        'assert not [m for m in sys.modules if m.startswith("slimnets")]\n'
        'assert model.trainable_weights and model.losses\n'
        'numpy.save(sys.argv[3], numpy.asarray(model(numpy.load(sys.argv[2]),'
        ' training=False)))\n')
    completed = subprocess.run(
        [sys.executable, '-c', script, output, str(tmp_path / 'images.npy'),
         str(tmp_path / 'logits.npy')], capture_output=True, text=True,
        timeout=300, cwd=str(tmp_path))
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert reference.scaled_error(np.load(str(tmp_path / 'logits.npy')),
                                  slim_logits(spec, prefix, images)) < \
        INFERENCE_TOLERANCE


def test_refusals_are_one_line_and_write_nothing(checkpoints, tmp_path, cli,
                                                 one_line_error):
    # A network with no standard Keras layer for one of its ops.
    spec = inference.ModelSpec('mobilenet_v3_small', {
        'depth_multiplier': 0.5, 'use_groupnorm': True}, 64, 5)
    with tf.Graph().as_default():
        inference.build_network(spec, tf.placeholder(tf.float32,
                                                     [None, 64, 64, 3]))
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            group_norm = tf.train.Saver().save(
                sess, str(tmp_path / 'gn' / 'model.ckpt'),
                write_meta_graph=False)
    with pytest.raises(ExportError, match='Keras model of mobilenet_v3_small'
                       ) as raised:
        keras_models.build(spec, group_norm)
    assert '\n' not in str(raised.value)

    # A Keras model of another width: the first mismatching layer, both
    # shapes, and no checkpoint.
    spec, _ = checkpoints['v1']
    wider = keras.applications.MobileNet(weights=None, alpha=0.5,
                                         input_shape=(SIZE, SIZE, 3),
                                         classes=CLASSES)
    target = tmp_path / 'out'
    with pytest.raises(CheckpointError, match=r"Keras layer 'conv1' does not "
                       r'match mobilenet_v1.*\[3, 3, 3, 16\] in Keras, '
                       r'\[3, 3, 3, 8\] in slim') as raised:
        keras_models.to_checkpoint(wider, str(target / 'model.ckpt'), spec)
    assert '\n' not in str(raised.value)
    assert not target.exists()

    # --trainable is for Keras only; the output must be a .keras file.
    _, prefix = checkpoints['v1']
    one_line_error(cli('export', '--checkpoint', prefix, '--format', 'onnx',
                       '--trainable', '--output', str(tmp_path / 'm.onnx')),
                   '--trainable applies to --format keras only')
    one_line_error(cli('export', '--checkpoint', prefix, '--format', 'keras',
                       '--trainable', '--output', str(tmp_path / 'm.h5')),
                   '.keras')
    assert not (tmp_path / 'm.h5').exists()


REAL = [('mobilenet_v1', '0.25_128'), ('mobilenet_v2', '1.0_224'),
        ('mobilenet_v3_small', '1.0_224')]


@pytest.mark.parametrize('name,variant', REAL)
def test_real_weights_round_trip(name, variant, tmp_path):
    """Google's checkpoints: Keras logits on the shared photos equal the
    slim graph's, and the weights come back as the same checkpoint."""
    folder = os.path.join(reference.PRETRAINED, name, variant)
    prefix = reference.require(os.path.join(folder, 'model.ckpt.index'))[
        :-len('.index')]
    spec, _ = models.model_spec(None, prefix)
    if os.path.exists(os.path.join(folder, 'expected.npz')):
        images = np.load(os.path.join(folder, 'expected.npz'))['inputs']
    else:
        images = export.representative_images(reference.PRETRAINED,
                                              spec.image_size)
    model = keras_models.keras_model(prefix)
    actual = keras_logits(model, images)
    expected = slim_logits(spec, prefix, images)
    assert reference.scaled_error(actual, expected) < INFERENCE_TOLERANCE
    np.testing.assert_array_equal(actual.argmax(1), expected.argmax(1))

    back, _ = keras_models.to_checkpoint(model, str(tmp_path / 'model.ckpt'))
    original = tf.train.load_checkpoint(prefix)
    written = tf.train.load_checkpoint(back)
    names = written.get_variable_to_shape_map()
    assert names
    for variable in names:
        source = variable + '/ExponentialMovingAverage'
        if source not in original.get_variable_to_shape_map():
            source = variable
        np.testing.assert_array_equal(written.get_tensor(variable),
                                      original.get_tensor(source))


def test_real_weights_training_step():
    """Google's v1 0.25_128, one SGD step on the shared photos: Keras moves
    every weight and moving statistic as slim's non-fused batch norm does."""
    prefix = reference.require(os.path.join(
        reference.PRETRAINED, 'mobilenet_v1', '0.25_128',
        'model.ckpt.index'))[:-len('.index')]
    spec, _ = models.model_spec(None, prefix)
    photos = export.representative_images(reference.PRETRAINED, 128)
    images = np.concatenate([photos, photos])[:4]
    labels = np.eye(1001, dtype=np.float32)[[282, 283, 286, 1]]
    model = keras_models.build(spec, prefix, weight_decay=0.004,
                               dropout_rate=0.0)
    initial = keras_weights.keras_to_variables(model, add_background=False)
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    model.train_on_batch(images, labels)
    after = keras_weights.keras_to_variables(model, add_background=False)
    _, plain = _slim_training_step(spec, prefix, images, labels, 0.1, 0.004,
                                   fused=False)
    assert max(float(np.abs(after[n] - initial[n]).max()) for n in after) > 1
    for name, value in after.items():
        assert np.abs(value - plain[name]).max() < ROUND_OFF * max(
            1.0, float(np.abs(plain[name]).max())), name


# Run under another Keras backend: load the .keras file, its logits, then
# one SGD step (the same optimizer, batch and labels as below) and every
# weight after it.
_BACKEND_SCRIPT = """
import sys, numpy, keras
model = keras.saving.load_model(sys.argv[1])
data = numpy.load(sys.argv[2])
logits = keras.ops.convert_to_numpy(model(data['images'], training=False))
model.compile(optimizer=keras.optimizers.SGD(0.1),
              loss=keras.losses.CategoricalCrossentropy(from_logits=True))
model.train_on_batch(data['images'], data['labels'])
numpy.savez(sys.argv[3], logits=logits,
            **{'w%d' % i: w for i, w in enumerate(model.get_weights())})
"""


def _backend_python(backend):
    """The Python to run `backend` with (SLIMNETS_KERAS_BACKEND_PYTHON, else
    this one), or skip when it lacks that backend."""
    python = os.environ.get('SLIMNETS_KERAS_BACKEND_PYTHON', sys.executable)
    environment = dict(os.environ, KERAS_BACKEND=backend)
    probe = subprocess.run([python, '-c', 'import %s, keras' % backend],
                           capture_output=True, timeout=120, env=environment)
    if probe.returncode:
        pytest.skip('%s is not installed for %s' % (backend, python))
    return python, environment


def _keras_step(path, images, labels):
    """Every weight of the .keras file at `path` after one SGD step on the
    TensorFlow backend (this process)."""
    model = keras.saving.load_model(path)
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    model.train_on_batch(images, labels)
    return model, [np.array(w) for w in model.get_weights()]


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_other_backend_when_installed(checkpoints, family, tmp_path):
    """The saved .keras file under another Keras backend (JAX by default,
    SLIMNETS_KERAS_BACKEND_TEST=torch for PyTorch; the Python that has it in
    SLIMNETS_KERAS_BACKEND_PYTHON): the slim graph's logits, and one SGD
    step that moves the weights (batch-norm moving statistics included) as
    the TensorFlow backend moves them.

    The step's noise floor is measured here: the TensorFlow backend itself,
    given the same batch in reverse order (batch statistics and gradients
    are sums in another order), moves the deepest layers' weights of these
    small generated networks differently by up to 10% of their step (batch
    norm over 4 images of 3x3 pixels is ill-conditioned).  The other
    backend's whole step (one vector of every weight) must stay within 3x
    that floor of TensorFlow's, plus float32 round-off."""
    backend = os.environ.get('SLIMNETS_KERAS_BACKEND_TEST', 'jax')
    python, environment = _backend_python(backend)
    spec, prefix = checkpoints[family]
    path = keras_models.save(keras_models.build(spec, prefix, dropout_rate=0.0),
                             str(tmp_path / 'model.keras'))
    images = small_models.smooth_images(4, SIZE, seed=9)
    labels = np.eye(CLASSES, dtype=np.float32)[[0, 3, 5, 9]]
    np.savez(str(tmp_path / 'batch.npz'), images=images, labels=labels)
    completed = subprocess.run(
        [python, '-c', _BACKEND_SCRIPT, path, str(tmp_path / 'batch.npz'),
         str(tmp_path / 'out.npz')], capture_output=True, text=True,
        timeout=300, env=environment)
    assert completed.returncode == 0, completed.stderr[-3000:]
    other = np.load(str(tmp_path / 'out.npz'))
    assert reference.scaled_error(other['logits'], slim_logits(
        spec, prefix, images)) < INFERENCE_TOLERANCE
    before = keras.saving.load_model(path).get_weights()
    _, after = _keras_step(path, images, labels)
    _, reordered = _keras_step(path, images[::-1], labels[::-1])
    step = np.concatenate([(a - b).ravel() for a, b in zip(after, before)])
    assert np.abs(step).max() > 0

    def off(weights):
        """How far a step is from the TensorFlow backend's, relative to the
        step (every weight and moving statistic, one vector)."""
        return float(np.linalg.norm(np.concatenate(
            [(w - a).ravel() for w, a in zip(weights, after)])) /
            np.linalg.norm(step))

    floor = off(reordered)
    difference = off([other['w%d' % i] for i in range(len(after))])
    logits = reference.scaled_error(other['logits'],
                                    slim_logits(spec, prefix, images))
    print('%s on %s: logits %.2g; step %.2g off TensorFlow\'s (its own '
          'reordered-batch floor %.2g)' % (family, backend, logits,
                                           difference, floor))
    assert difference <= 3 * floor + ROUND_OFF, (difference, floor)


def test_the_default_model_as_keras(tmp_path):
    """`keras_model()` with nothing named: the embedded v2 1.0_224 (no
    network), which calls the repository's cat an Egyptian cat."""
    model = keras_models.keras_model(cache_dir=str(tmp_path), progress=False)
    assert model.input.shape[1:] == (224, 224, 3)
    assert model.output.shape[-1] == 1001
    image = export.representative_images(golden.DATA, 224)[:1]
    assert int(np.argmax(keras_logits(model, image), 1)[0]) == 286
