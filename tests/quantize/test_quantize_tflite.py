"""Integer TFLite from QAT checkpoints, and Google's quantized files
reproduced: TFLite -> checkpoint with ranges -> integer TFLite again.

The reproduction of all four quantized files is measured by
benchmarks/quantized_tflite_reproduction.py; here the smallest v1 and the
v3-small (hard-swish and squeeze-excite ranges) run in CI.
"""

import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from slimnets import inference
from slimnets import nets_factory
from slimnets import quantize
from slimnets import quantized_tflite
from slimnets.errors import QuantizationError

import reference

IMAGES = ('cat.bmp', 'grace_hopper.bmp', 'bird.bmp')


def _shared_images(size):
    """The three fixture images (Inception eval preprocessing) and four
    random [-1, 1] images, [7, size, size, 3]."""
    with tf.Graph().as_default(), tf.Session() as sess:
        encoded = tf.placeholder(tf.string, [])
        image = inference.decode_and_preprocess(encoded, size)
        photos = [sess.run(image, {encoded: inference.read_image_file(
            os.path.join(reference.PRETRAINED, name))}) for name in IMAGES]
    noise = np.random.RandomState(0).uniform(-1, 1, (4, size, size, 3))
    return np.concatenate([np.stack(photos), noise]).astype(np.float32)


@pytest.mark.parametrize('name,network', [
    ('mobilenet_v1_0.25_128_quant', 'mobilenet_v1'),
    ('mobilenet_v3_small_1.0_224_uint8', 'mobilenet_v3_small'),
])
def test_google_quantized_file_is_reproduced(name, network, tmp_path):
    google = reference.require(os.path.join(reference.PRETRAINED,
                                            name + '.tflite'))
    prefix, identity, input_stats = quantized_tflite.tflite_to_qat_checkpoint(
        google, str(tmp_path / 'ckpt' / 'model.ckpt'))
    assert identity.network == network
    ranges = quantized_tflite.quantization_ranges(prefix)
    assert any(r.endswith('/act_quant/min') for r in ranges)
    assert any(r.endswith('/weights_quant/max') for r in ranges)
    size = quantized_tflite.tflite_input_size(google)
    images = _shared_images(size)
    output = str(tmp_path / 'again.tflite')
    report = quantized_tflite.export_tflite(
        output, prefix, image_size=size, input_stats=input_stats,
        probe=images[:3])
    assert report.inference_type == 'uint8'
    # Measured: all four of Google's files come back bit for bit on these
    # images (0 steps); one step is the contract.
    expected, _, _ = quantized_tflite.run_integer_tflite(google, images)
    actual, _, _ = quantized_tflite.run_integer_tflite(output, images)
    assert actual.dtype == np.uint8 and expected.dtype == np.uint8
    assert np.array_equal(actual.argmax(1), expected.argmax(1))
    steps = np.abs(actual.astype(int) - expected.astype(int))
    assert np.mean(steps <= 1) >= 0.99
    # And the exported model agrees with its fake-quant eval graph.
    assert report.within_one_step >= 0.97
    assert report.input_quantization == pytest.approx(
        (1.0 / input_stats[1], input_stats[0]))


def test_v1_recovered_ranges_are_google_grids(tmp_path):
    google = reference.require(os.path.join(
        reference.PRETRAINED, 'mobilenet_v1_0.25_128_quant.tflite'))
    prefix, _, input_stats = quantized_tflite.tflite_to_qat_checkpoint(
        google, str(tmp_path / 'model.ckpt'))
    assert input_stats == (128.0, 128.0)
    reader = tf.train.load_checkpoint(prefix)
    layer = 'MobilenetV1/MobilenetV1/Conv2d_0/'
    # Relu6 outputs: [0, 6] on 255 steps (0.0235285 per step, zero 0).
    assert reader.get_tensor(layer + 'act_quant/min') == 0.0
    assert reader.get_tensor(layer + 'act_quant/max') == pytest.approx(
        0.023528477 * 255, rel=1e-6)
    # Weights: zero point 157, scale 0.0088824 on the narrow grid [1, 255].
    assert reader.get_tensor(layer + 'weights_quant/min') == pytest.approx(
        (1 - 157) * 0.00888241, rel=1e-5)
    assert reader.get_tensor(layer + 'weights_quant/max') == pytest.approx(
        (255 - 157) * 0.00888241, rel=1e-5)
    # The same checkpoint holds the float network.
    shapes = tf.train.list_variables(prefix)
    assert ('MobilenetV1/Conv2d_0/weights', [3, 3, 3, 8]) in [
        (n, s) for n, s in shapes]


def _qat_checkpoint(network, kwargs, size, folder, source=None, steps=2):
    """A network (restored from the float checkpoint `source`, 1001
    classes, or initialized at random, 5 classes) trained `steps` QAT steps
    on generated data; returns (prefix, ranges before, ranges after)."""
    prefix = os.path.join(folder, 'model.ckpt')
    rng = np.random.RandomState(0)
    with tf.Graph().as_default() as graph:
        tf.set_random_seed(0)
        images = tf.placeholder(tf.float32, [8, size, size, 3])
        labels = tf.placeholder(tf.int32, [8])
        fn = nets_factory.get_network_fn(network, 1001 if source else 5,
                                         is_training=True)
        logits, _ = fn(images, **kwargs)
        float_variables = tf.global_variables()
        quantize.create_training_graph(graph, quant_delay=0)
        loss = tf.losses.sparse_softmax_cross_entropy(labels, logits)
        with tf.control_dependencies(
                tf.get_collection(tf.GraphKeys.UPDATE_OPS)):
            train = tf.train.GradientDescentOptimizer(0.01).minimize(loss)
        ranges = [v for v in tf.global_variables()
                  if v.op.name.endswith('act_quant/max')]
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            if source:
                tf.train.Saver(float_variables).restore(sess, source)
            before = sess.run(ranges)
            for _ in range(steps):
                # Class k: a smooth image of mean brightness k.
                classes = rng.randint(0, 5, 8)
                batch = (classes[:, None, None, None] / 2.0 - 1.0 +
                         rng.normal(0, 0.2, (8, size, size, 3)))
                sess.run(train, {images: batch.astype(np.float32),
                                 labels: classes})
            after = sess.run(ranges)
            tf.train.Saver().save(sess, prefix, write_meta_graph=False)
    return prefix, before, after


@pytest.mark.parametrize('network,kwargs,inference_type,pretrained', [
    ('mobilenet_v1', {'depth_multiplier': 0.25}, 'uint8', True),
    ('mobilenet_v2', {'depth_multiplier': 0.35}, 'int8', False),
])
def test_qat_run_exports_an_integer_model(network, kwargs, inference_type,
                                          pretrained, tmp_path):
    size = 64
    source = reference.require(os.path.join(
        reference.PRETRAINED, 'mobilenet_v1', '0.25_128',
        'model.ckpt.index'))[:-len('.index')] if pretrained else None
    prefix, before, after = _qat_checkpoint(network, kwargs, size,
                                            str(tmp_path), source)
    assert not np.allclose(before, after)  # the ranges were learned
    assert quantized_tflite.has_quantization_ranges(prefix)
    output = str(tmp_path / 'model.tflite')
    report = quantized_tflite.export_tflite(
        output, prefix, model=network, image_size=size,
        inference_type=inference_type)
    assert os.path.getsize(output) == report.size_bytes
    classes = 1001 if pretrained else 5
    raw, _, _ = quantized_tflite.run_integer_tflite(
        output, np.zeros((1, size, size, 3), np.float32))
    assert raw.dtype == np.dtype(inference_type)
    assert raw.shape == (1, classes)
    if inference_type == 'int8':  # the int8 specification: weights
        # symmetric (zero point 0), activations zero point in [-128, 127]
        assert report.output_quantization == (1.0 / 256, -128)
    # The integer kernels against the float simulation of the same grid.
    # Measured (seeded): v1 from the pretrained weights 99.7% within one
    # step, max 7.0 steps, same top-1; the randomly initialized v2 gives
    # near-uniform outputs (100%, max 0.2 steps).  Google's own files
    # against their eval graphs: 99.6% to 99.9%, max 3 to 21 steps.
    assert report.within_one_step >= 0.97
    assert report.max_step_difference <= 24
    assert report.top1_agreement >= 0.75


def test_export_refuses_a_float_checkpoint(tmp_path):
    prefix = str(tmp_path / 'model.ckpt')
    with tf.Graph().as_default():
        fn = nets_factory.get_network_fn('mobilenet_v1', 5)
        fn(tf.placeholder(tf.float32, [1, 64, 64, 3]),
           depth_multiplier=0.25)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            tf.train.Saver().save(sess, prefix, write_meta_graph=False)
    assert not quantized_tflite.has_quantization_ranges(prefix)
    with pytest.raises(QuantizationError) as error:
        quantized_tflite.export_tflite(str(tmp_path / 'x.tflite'), prefix,
                                       model='mobilenet_v1', image_size=64)
    assert 'quantize-delay' in str(error.value)
    with pytest.raises(QuantizationError):
        quantized_tflite.convert_graph_def(tf.GraphDef(), 64, 'int4')
