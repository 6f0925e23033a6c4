"""Exports to ONNX, OpenVINO IR, Keras and the two-signature SavedModel.

Each export checks itself against the unfolded TensorFlow graph
(`ExportReport.max_abs_difference`); these tests also load each artifact
independently (the Keras model in a process that never imports slimnets)
and compare it with the TensorFlow runtime.  Measured self-check
differences (v2 0.35 at 96 px, 10 classes): 4.7e-6 for every format, the
folding's own round-off (OpenVINO's IR with float16 weights, its
save_model default, was 4e-3).
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from slimnets import errors
from slimnets import export
from slimnets import inference
from slimnets import optimize
from slimnets import runtimes
from slimnets.export import keras as keras_export

import small_models

AGREEMENT = runtimes.AGREEMENT


@pytest.fixture(scope='module')
def model(tmp_path_factory):
    """(spec, prefix, images, TensorFlow probabilities of images)."""
    spec, prefix = small_models.calibrated_checkpoint(
        str(tmp_path_factory.mktemp('small_v2')))
    graph_def, _ = optimize.frozen_inference_graph(spec, prefix)
    images = small_models.smooth_images(3, spec.image_size, seed=3)
    with runtimes.load(graph_def, 'tensorflow') as runtime:
        expected = runtime.run(images)
    return spec, prefix, images, expected


def require_extra(module, extra):
    try:
        __import__(module)
    except ImportError:
        pytest.skip('%s is not installed (pip install "slimnets[%s]")' % (
            module, extra))


def assert_agrees(actual, expected):
    assert float(np.max(np.abs(actual - expected))) < AGREEMENT
    assert (actual.argmax(1) == expected.argmax(1)).all()


def check_report(report, fmt):
    assert report.format == fmt
    assert report.max_abs_difference < AGREEMENT, report
    assert report.top1_agreement == 1.0


@pytest.mark.parametrize('before_after', [(95, 3, 2), (96, 3, 2), (97, 5, 2),
                                          (96, 3, 1), (7, 7, 1)])
def test_explicit_padding_is_tensorflows_same(before_after):
    size, kernel, stride = before_after
    rng = np.random.RandomState(size + kernel)
    x = rng.normal(size=[1, size, size, 2]).astype(np.float32)
    w = rng.normal(size=[kernel, kernel, 2, 3]).astype(np.float32)
    pad = keras_export.same_padding(size, kernel, stride)
    with tf.Graph().as_default(), tf.Session() as sess:
        same = tf.nn.conv2d(x, w, [1, stride, stride, 1], 'SAME')
        explicit = tf.nn.conv2d(tf.pad(x, [[0, 0], pad, pad, [0, 0]]), w,
                                [1, stride, stride, 1], 'VALID')
        same, explicit = sess.run([same, explicit])
    assert same.shape == explicit.shape
    np.testing.assert_allclose(explicit, same, atol=1e-5)


def test_onnx_export(model, tmp_path):
    require_extra('tf2onnx', 'onnx')
    require_extra('onnxruntime', 'onnx')
    import onnx  # pylint: disable=import-outside-toplevel
    import onnxruntime  # pylint: disable=import-outside-toplevel
    spec, prefix, images, expected = model
    path = str(tmp_path / 'model.onnx')
    check_report(export.export(path, 'onnx', prefix,
                               image_size=spec.image_size), 'onnx')
    proto = onnx.load(path)
    assert [o.version for o in proto.opset_import if o.domain in ('', 'ai.onnx')
            ] == [export.ONNX_OPSET]
    session = onnxruntime.InferenceSession(
        path, providers=['CPUExecutionProvider'])
    assert [i.name for i in session.get_inputs()] == ['input']
    assert sorted(o.name for o in session.get_outputs()) == [
        'logits', 'probabilities']
    assert_agrees(session.run(['probabilities'], {'input': images})[0],
                  expected)


def test_openvino_export(model, tmp_path):
    require_extra('openvino', 'openvino')
    import openvino  # pylint: disable=import-outside-toplevel
    spec, prefix, images, expected = model
    path = str(tmp_path / 'model.xml')
    check_report(export.export(path, 'openvino', prefix,
                               image_size=spec.image_size), 'openvino')
    assert os.path.isfile(str(tmp_path / 'model.bin'))
    compiled = runtimes.openvino_compile(openvino.Core().read_model(path))
    outputs = compiled(images)
    probabilities = [v for k, v in outputs.items()
                     if 'probabilities:0' in k.get_names()]
    assert_agrees(np.asarray(probabilities[0]), expected)
    with pytest.raises(errors.ExportError, match='.xml'):
        export.export(str(tmp_path / 'model.ir'), 'openvino', prefix,
                      image_size=spec.image_size)


_KERAS_ALONE = textwrap.dedent('''
    import json, sys
    import numpy as np
    import keras
    model = keras.saving.load_model(sys.argv[1])
    out = model(np.load(sys.argv[2]), training=False)
    np.save(sys.argv[3], np.asarray(out['probabilities']))
    print(json.dumps({
        'slimnets_imported': any(m.startswith('slimnets') for m in sys.modules),
        'layers': sorted({type(l).__module__.split('.')[0] + '.' +
                          type(l).__name__ for l in model.layers})}))
''')


def test_keras_export_loads_without_slimnets(model, tmp_path):
    spec, prefix, images, expected = model
    path = str(tmp_path / 'model.keras')
    check_report(export.export(path, 'keras', prefix,
                               image_size=spec.image_size), 'keras')
    np.save(str(tmp_path / 'images.npy'), images)
    completed = subprocess.run(
        [sys.executable, '-c', _KERAS_ALONE, path, str(tmp_path / 'images.npy'),
         str(tmp_path / 'out.npy')], capture_output=True, text=True,
        timeout=300, cwd=str(tmp_path))
    assert completed.returncode == 0, completed.stderr[-3000:]
    facts = json.loads(completed.stdout.strip().splitlines()[-1])
    assert not facts['slimnets_imported']
    assert set(facts['layers']) <= {
        'keras.InputLayer', 'keras.Conv2D', 'keras.DepthwiseConv2D',
        'keras.ReLU', 'keras.Add', 'keras.Multiply', 'keras.Rescaling',
        'keras.ZeroPadding2D', 'keras.AveragePooling2D', 'keras.Reshape',
        'keras.Softmax', 'keras.Identity'}, facts['layers']
    assert 'keras.ZeroPadding2D' in facts['layers']
    assert_agrees(np.load(str(tmp_path / 'out.npy')), expected)
    with pytest.raises(errors.ExportError, match='.keras'):
        export.export(str(tmp_path / 'model.h5'), 'keras', prefix,
                      image_size=spec.image_size)


def test_keras_model_of_v3(tmp_path):
    """v3's hard-swish and squeeze-excite translate too."""
    spec, prefix = small_models.calibrated_checkpoint(
        str(tmp_path), network='mobilenet_v3_small', depth=0.5, size=64)
    graph_def, _ = optimize.frozen_inference_graph(spec, prefix)
    images = small_models.smooth_images(2, 64, seed=5)
    with runtimes.load(graph_def, 'tensorflow') as runtime:
        expected = runtime.run(images)
    keras_model = keras_export.keras_model(graph_def)
    actual = np.asarray(keras_model(images, training=False)['probabilities'])
    assert_agrees(actual, expected)


def test_saved_model_has_float_and_image_bytes_signatures(model, tmp_path):
    spec, prefix, images, expected = model
    path = str(tmp_path / 'saved_model')
    report = export.export(path, 'saved_model', prefix,
                           image_size=spec.image_size)
    check_report(report, 'saved_model')
    encoded = small_models.encoded_pngs(
        small_models.smooth_images(3, spec.image_size + 30, seed=9))
    with inference.Classifier(prefix, image_size=spec.image_size,
                              runtime='tensorflow') as classifier:
        wanted = classifier.predict(encoded)
    import tensorflow as tf2  # pylint: disable=import-outside-toplevel
    loaded = tf2.saved_model.load(path)
    assert set(loaded.signatures) == {'serving_default', 'image_bytes'}
    from_bytes = loaded.signatures['image_bytes'](
        image_bytes=tf2.constant(encoded))
    assert set(from_bytes) == {'logits', 'probabilities'}
    assert_agrees(from_bytes['probabilities'].numpy(), wanted)
    from_floats = loaded.signatures['serving_default'](
        images=tf2.constant(images))
    assert_agrees(from_floats['probabilities'].numpy(), expected)


def test_cli_export_onnx_states_opset_and_difference(model, tmp_path, cli):
    require_extra('tf2onnx', 'onnx')
    spec, prefix, _, _ = model
    completed = cli('export', '--checkpoint', prefix, '--image-size',
                    spec.image_size, '--format', 'onnx', '--output',
                    tmp_path / 'm.onnx')
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert '(onnx, opset %d)' % export.ONNX_OPSET in completed.stdout
    line = [row for row in completed.stdout.splitlines()
            if 'self-check' in row][0]
    assert float(line.split('= ')[1].split(',')[0]) < AGREEMENT


def test_pretrained_v2_onnx_and_keras_reproduce_tensorflow(tmp_path,
                                                          pretrained_v2):
    """The issue's check: the ONNX and Keras exports of v2 1.0_224 give
    TensorFlow's probabilities on the shared images."""
    require_extra('onnxruntime', 'onnx')
    prefix, encoded = pretrained_v2
    with inference.Classifier(prefix, runtime='tensorflow') as classifier:
        expected = classifier.predict(encoded)
        images = classifier.session.run(classifier.images,
                                        {classifier.encoded: encoded})
    assert list(expected.argmax(1)) == [286, 653, 20]
    differences = {}
    for fmt, name in (('onnx', 'model.onnx'), ('keras', 'model.keras')):
        path = str(tmp_path / name)
        report = export.export(path, fmt, prefix)
        check_report(report, fmt)
        if fmt == 'onnx':
            actual = runtimes.OnnxRuntime(
                model_bytes=open(path, 'rb').read()).run(images)
        else:
            import keras  # pylint: disable=import-outside-toplevel
            actual = np.asarray(keras.saving.load_model(path)(
                images, training=False)['probabilities'])
        differences[fmt] = (report.max_abs_difference,
                            float(np.max(np.abs(actual - expected))))
        assert_agrees(actual, expected)
    print('(self-check, on the shared images):', differences)
