"""Quantization-aware fine-tuning through slimnets' front doors:
`slimnets train --quantize_delay`, `Classifier` on the QAT checkpoint,
`slimnets export --format tflite` writing the integer model."""

import os
import re

import numpy as np
import pytest
import tensorflow as tf2

from slimnets import inference
from slimnets import quantize
from slimnets import quantized_tflite

import reference


@pytest.fixture(scope='module')
def two_colours(tmp_path_factory):
    """Two classes of noisy single-colour 40x40 PNGs, 6 each."""
    root = tmp_path_factory.mktemp('colours')
    rng = np.random.RandomState(0)
    for name, colour in (('blue', (40, 60, 200)), ('red', (200, 40, 40))):
        os.makedirs(root / name)
        for index in range(6):
            pixels = np.clip(np.array(colour)[None, None] +
                             rng.normal(0, 30, (40, 40, 3)), 0, 255)
            (root / name / ('%d.png' % index)).write_bytes(
                tf2.io.encode_png(pixels.astype(np.uint8)).numpy())
    return str(root)


def test_train_classify_and_export_quantized(two_colours, tmp_path, cli,
                                             one_line_error):
    source = reference.require(os.path.join(
        reference.PRETRAINED, 'mobilenet_v1', '0.25_128',
        'model.ckpt.index'))[:-len('.index')]
    train_dir = str(tmp_path / 'run')
    # train_image_classifier's spelling of the flag.
    completed = cli('train', '--train-dir', train_dir, '--data', two_colours,
                    '--checkpoint', source, '--quantize_delay', '0',
                    '--max-steps', '2', '--batch-size', '4', '--image-size',
                    '64', '--optimizer', 'sgd', '--learning-rate', '0.01',
                    '--seed', '1', '--no-progress')
    assert completed.returncode == 0, completed.stderr[-2000:]
    checkpoint = os.path.join(train_dir, 'model.ckpt-2')
    assert quantize.has_quantization_ranges(checkpoint)
    ranges = quantize.quantization_ranges(checkpoint)
    assert 'MobilenetV1/MobilenetV1/Conv2d_0/act_quant/max' in ranges
    assert 'MobilenetV1/Logits/Conv2d_1c_1x1/weights_quant/min' in ranges

    image = open(os.path.join(two_colours, 'red', '0.png'), 'rb').read()
    with inference.Classifier(checkpoint) as classifier:
        assert classifier.quantized
        assert classifier.spec.num_classes == 2
        fake_quants = [op for op in classifier.graph.get_operations()
                       if op.type == 'FakeQuantWithMinMaxVars']
        assert len(fake_quants) == 56
        probabilities = classifier.predict([image])
    assert probabilities.shape == (1, 2)

    output = str(tmp_path / 'model.tflite')
    completed = cli('export', '--format', 'tflite', '--checkpoint',
                    checkpoint, '--output', output)
    assert completed.returncode == 0, completed.stderr[-2000:]
    printed = completed.stdout
    assert 'integer TFLite, uint8' in printed
    # The self-check against the fake-quant eval graph is reported.  (Its
    # figures are tested in test_quantize_tflite.py: two classes near 0.5
    # each, as here after two steps, turn a one-step logit difference into
    # many probability steps.)
    assert re.search(r'self-check on 4 probe images against the fake-quant '
                     r'eval graph: [\d.]+% of outputs within one '
                     r'quantization step \(max [\d.]+ steps\), same top-1 '
                     r'on [\d.]+%', printed), printed
    raw, _, _ = quantized_tflite.run_integer_tflite(
        output, np.zeros((1, 64, 64, 3), np.float32))
    assert raw.dtype == np.uint8 and raw.shape == (1, 2)

    # A float checkpoint keeps the float graph; asking it for an integer
    # model names the fix.
    with inference.Classifier(source) as classifier:
        assert not classifier.quantized
    one_line_error(cli('export', '--format', 'tflite', '--checkpoint',
                       source, '--output', str(tmp_path / 'x.tflite'),
                       '--inference-type', 'int8'), '--quantize-delay')
