"""Export a checkpoint as a frozen graph, a SavedModel, TFLite, ONNX,
an OpenVINO IR or a Keras model (the last three and the SavedModel's
'image_bytes' signature: `slimnets.exporters`).

Every export checks itself before it returns: the artifact is loaded and
run on a probe batch, and its output compared with the source graph's
(the restored, unfolded network).  The comparison is in the returned
`ExportReport`.
"""

import collections
import glob
import os
import shutil
import tempfile
import warnings

import numpy as np
import tensorflow as tf2
import tensorflow.compat.v1 as tf

from slimnets import export_formats
from slimnets import fileio
from slimnets import images as images_lib
from slimnets import keras_models
from slimnets import models
from slimnets import optimize
from slimnets import preprocessing
from slimnets.errors import ExportError  # noqa: F401  (public here too)
from slimnets.errors import InputError
from slimnets.errors import UsageError
from slimnets.graph_format import MAX_BATCH_SIZE
from slimnets.runtimes import ONNX_OPSET  # noqa: F401  (public here too)

FORMATS = ('frozen', 'saved_model', 'tflite') + tuple(export_formats.WRITERS)
check_output = export_formats.check_output
QUANTIZATIONS = (None, 'float16', 'dynamic', 'int8')

ExportReport = collections.namedtuple('ExportReport', [
    'path', 'format', 'quantization', 'spec', 'folded_batch_norms',
    'max_abs_difference',  # |artifact - source| on the probe probabilities
    'top1_agreement',      # fraction of probe images with the same top-1
    'probe_images'])


def probe_batch(image_size, count=4, seed=0):
    """Deterministic pseudo-images [count, size, size, 3] in [-1, 1]."""
    rng = np.random.RandomState(seed)
    smooth = rng.uniform(-1, 1, [count, 8, 8, 3]).astype(np.float32)
    with tf.Graph().as_default(), tf.Session() as sess:
        images = tf.image.resize_bilinear(smooth, [image_size, image_size])
        return sess.run(images)


def representative_paths(folder, limit=64):
    """The first `limit` image files under `folder` (recursively, sorted;
    regular files with an image extension).

    Raises:
      InputError: `folder` is not a folder, or holds no image files.
    """
    if not os.path.isdir(folder):
        raise InputError('--representative-data %s is not a folder; give a '
                         'folder of typical images (%s)' % (
                             folder, ', '.join(images_lib.IMAGE_EXTENSIONS)))
    paths = sorted(p for p in glob.glob(os.path.join(folder, '**', '*'),
                                        recursive=True)
                   if p.lower().endswith(images_lib.IMAGE_EXTENSIONS) and
                   os.path.isfile(p))[:limit]
    if not paths:
        raise InputError('no images in %s for the representative dataset '
                         '(looked for %s files in it and its subfolders); '
                         'give a folder of typical images' % (
                             folder, ', '.join(images_lib.IMAGE_EXTENSIONS)))
    return paths


def representative_images(folder, image_size, limit=64):
    """Images from `folder` (recursively), eval-preprocessed, [N, s, s, 3].

    Raises:
      InputError: no image files (see `representative_paths`), or a file
        that does not decode as an image (named in the message).
    """
    paths = representative_paths(folder, limit)
    with tf.Graph().as_default(), tf.Session() as sess:
        encoded = tf.placeholder(tf.string, [])
        image = preprocessing.decode_and_preprocess(encoded, image_size)
        result = []
        for path in paths:
            data = images_lib.check_image(images_lib.read_image_file(path),
                                          path)
            try:
                result.append(sess.run(image, {encoded: data}))
            except (tf.errors.InvalidArgumentError,
                    tf.errors.ResourceExhaustedError) as error:
                raise InputError('%s in --representative-data is not an image '
                                 'that decodes (%s); remove it or fix it' % (
                                     path, error.message.splitlines()[0])
                                 ) from None
        return np.stack(result)


def _source_probabilities(spec, checkpoint, *batches):
    """The unfolded network's probabilities of each batch (one array for one
    batch, else a list)."""
    frozen, _ = optimize.frozen_inference_graph(spec, checkpoint, fold=False)
    model = optimize.FrozenModel(frozen)
    try:
        results = [model.run(images) for images in batches]
    finally:
        model.close()
    return results[0] if len(batches) == 1 else results


def _write_frozen(graph_def, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fileio.write_bytes(path, graph_def.SerializeToString())


def _write_saved_model(graph_def, path):
    if os.path.exists(path):
        raise ExportError('%s exists; remove it or choose another --output'
                          % path)
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(graph_def, name='')
        images = graph.get_tensor_by_name(optimize.INPUT_NAME + ':0')
        outputs = {name: graph.get_tensor_by_name(name + ':0')
                   for name in optimize.OUTPUT_NAMES}
        signature = tf.saved_model.signature_def_utils.predict_signature_def(
            inputs={'images': images}, outputs=outputs)
        with tf.Session(graph=graph) as sess, fileio.atomic_folder(
                path, create=False) as temporary:
            builder = tf.saved_model.Builder(temporary)
            builder.add_meta_graph_and_variables(
                sess, [tf.saved_model.tag_constants.SERVING],
                signature_def_map={'serving_default': signature},
                strip_default_attrs=True)
            builder.save()


def _tflite_bytes(saved_model_dir, quantization, representative):
    converter = tf2.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    if quantization:
        converter.optimizations = [tf2.lite.Optimize.DEFAULT]
    if quantization == 'float16':
        converter.target_spec.supported_types = [tf2.float16]
    elif quantization == 'int8':
        if representative is None:
            raise ExportError('int8 quantization needs --representative-data '
                              '(a folder of typical images)')

        def dataset():
            for image in representative:
                yield [image[np.newaxis].astype(np.float32)]

        converter.representative_dataset = dataset
        converter.target_spec.supported_ops = [
            tf2.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter.convert()


def run_tflite(model_content, images, output='probabilities'):
    """Runs a TFLite model image by image; returns the named output."""
    with warnings.catch_warnings():
        # tf.lite.Interpreter announces its own move to ai_edge_litert.
        warnings.simplefilter('ignore', UserWarning)
        interpreter = tf2.lite.Interpreter(model_content=model_content)
    input_detail = interpreter.get_input_details()[0]
    details = [d for d in interpreter.get_output_details()
               if d['name'].split(':')[0].endswith(output)]
    if not details:
        raise ExportError('the TFLite model has no %r output (outputs: %s)' % (
            output, [d['name'] for d in interpreter.get_output_details()]))
    interpreter.resize_tensor_input(input_detail['index'],
                                    [1] + list(images.shape[1:]))
    interpreter.allocate_tensors()
    results = []
    for image in images:
        interpreter.set_tensor(input_detail['index'],
                               image[np.newaxis].astype(np.float32))
        interpreter.invoke()
        results.append(interpreter.get_tensor(details[0]['index'])[0])
    return np.stack(results)


def check_batch_size(batch_size):
    """Refuses a fixed batch size below 1 or above `MAX_BATCH_SIZE`.

    Raises:
      UsageError: naming the bound.
    """
    if batch_size is None:
        return
    if isinstance(batch_size, bool) or not isinstance(
            batch_size, (int, np.integer)) or not (
                1 <= batch_size <= MAX_BATCH_SIZE):
        raise UsageError('batch size %r is out of range: a fixed batch size '
                         'is a whole number in 1..%d (leave it out for any '
                         'batch size)' % (batch_size, MAX_BATCH_SIZE))


def export(output, format, checkpoint=None, model=None, image_size=None,  # pylint: disable=redefined-builtin
           batch_size=None, quantization=None, representative_data=None,
           moving_average='auto', cache_dir=None, progress=True,
           trainable=False, force_image_size=False):
    """Exports a checkpoint; returns an `ExportReport` of its self-check.

    Args:
      output: the file (frozen, tflite) or folder (saved_model) to write.
      format: one of `FORMATS`: 'frozen', 'saved_model' (signatures
        'serving_default' on float images and 'image_bytes' on encoded
        images), 'tflite', 'onnx' (opset `runtimes.ONNX_OPSET`), 'openvino'
        (.xml IR) or 'keras' (.keras).
      checkpoint: a checkpoint path or catalogue name (default: `model`
        when it is a catalogue name, else the embedded default model).
      model: nets_factory or catalogue name; default inferred.
      image_size: input size; default the one recorded beside the
        checkpoint, else the catalogue's, else 224.  Refused when it
        contradicts a QAT checkpoint's calibration size, unless
        `force_image_size` (`models.check_image_size`).
      batch_size: fixed batch size of the graph, 1..`MAX_BATCH_SIZE`;
        default any.
      quantization: TFLite only: None, 'float16', 'dynamic' or 'int8'.
      representative_data: a folder of images (int8 calibration; also the
        probe images when given).
      trainable: 'keras' only: the trainable model of
        `slimnets.keras_models` (batch norm unfolded, weight decay), not
        the folded inference graph.

    Raises:
      ExportError, InputError, checkpoints.CheckpointError.
    """
    if format not in FORMATS:
        raise ExportError('unknown format %r; choose from %s'
                          % (format, ', '.join(FORMATS)))
    if quantization not in QUANTIZATIONS:
        raise ExportError('unknown quantization %r; choose from float16, '
                          'dynamic, int8' % (quantization,))
    if quantization and format != 'tflite':
        raise ExportError('quantization applies to --format tflite only')
    if trainable and format != 'keras':
        raise ExportError('--trainable applies to --format keras only')
    check_batch_size(batch_size)
    export_formats.check_output(format, output)
    if quantization == 'int8' and not representative_data:
        raise ExportError('int8 quantization needs --representative-data '
                          '(a folder of typical images)')
    if representative_data:
        representative_paths(representative_data)
    spec, prefix = models.model_spec(model, models.weights_for(
        checkpoint, model), image_size, cache_dir=cache_dir, progress=progress,
        force_image_size=force_image_size)
    graph_def, fold_report = (None, None) if trainable else (
        optimize.frozen_inference_graph(spec, prefix, batch_size=batch_size,
                                        moving_average=moving_average))
    representative = (representative_images(representative_data,
                                            spec.image_size)
                      if representative_data else None)
    probe = representative[:8] if representative is not None else \
        probe_batch(spec.image_size)
    if batch_size:
        probe = np.resize(probe, (batch_size,) + probe.shape[1:])
    if format == 'saved_model':  # its 'image_bytes' signature is checked too
        encoded = export_formats.encode_pngs(probe)
        expected, expected_bytes = _source_probabilities(
            spec, prefix, probe,
            export_formats.preprocess_encoded(encoded, spec.image_size))
    else:
        expected = _source_probabilities(spec, prefix, probe)

    if trainable:
        actual = keras_models.write_trainable(spec, prefix, output, probe,
                                              moving_average=moving_average)
    elif format in export_formats.WRITERS:
        actual = export_formats.WRITERS[format](graph_def, output, probe)
    elif format == 'frozen':
        _write_frozen(graph_def, output)
        model_ = optimize.FrozenModel.load(output)
        try:
            actual = model_.run(probe)
        finally:
            model_.close()
    elif format == 'saved_model':
        export_formats.write_serving_saved_model(graph_def, output,
                                                 spec.image_size, batch_size)
        actual = export_formats.run_serving_saved_model(output, probe)
        actual_bytes = export_formats.run_serving_saved_model(output,
                                                         encoded=encoded)
        actual = np.concatenate([actual, actual_bytes])
        expected = np.concatenate([expected, expected_bytes])
    else:
        scratch = tempfile.mkdtemp(prefix='slimnets-export-')
        try:
            saved_model_dir = os.path.join(scratch, 'saved_model')
            _write_saved_model(graph_def, saved_model_dir)
            content = _tflite_bytes(saved_model_dir, quantization,
                                    representative)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        fileio.write_bytes(output, content)
        actual = run_tflite(content, probe)

    difference = float(np.max(np.abs(actual - expected)))
    agreement = float(np.mean(actual.argmax(1) == expected.argmax(1)))
    return ExportReport(output, format, quantization, spec,
                        fold_report.folded if fold_report else 0, difference,
                        agreement, len(probe))
