"""Export a checkpoint as a frozen graph, a SavedModel, TFLite, ONNX,
an OpenVINO IR or a Keras model (one module per format in
`slimnets.export`: `tflite`, `serving`, `keras`, and `formats` for the
writers' table).

Every export checks itself before it returns: the artifact is loaded and
run on a probe batch, and its output compared with the source graph's
(the restored, unfolded network).  The comparison is in the returned
`ExportReport`.
"""

import collections
import os
import shutil
import tempfile

import numpy as np
import tensorflow.compat.v1 as tf

from slimnets import fileio
from slimnets import keras_models
from slimnets import optimize
from slimnets import runtimes
from slimnets.errors import ExportError
from slimnets.errors import UsageError
from slimnets.export import formats as export_formats
from slimnets.export import serving
from slimnets.export import tflite
from slimnets.graph_format import MAX_BATCH_SIZE
from slimnets.inference import models

__all__ = ['FORMATS', 'QUANTIZATIONS', 'ExportReport', 'check_output',
           'check_batch_size', 'probe_batch', 'export']

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


def _source_probabilities(spec, checkpoint, *batches):
    """The unfolded network's probabilities of each batch (one array for one
    batch, else a list)."""
    frozen, _ = optimize.frozen_inference_graph(spec, checkpoint, fold=False)
    model = runtimes.TensorFlowRuntime(frozen, rewrite=False)
    try:
        results = [model.run(images) for images in batches]
    finally:
        model.close()
    return results[0] if len(batches) == 1 else results


def _write_frozen(graph_def, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fileio.write_bytes(path, graph_def.SerializeToString())


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
    output = fileio.path_argument(output, 'output')
    if representative_data is not None:
        representative_data = fileio.path_argument(representative_data,
                                                   'representative_data')
    _check_request(output, format, batch_size, quantization,
                   representative_data, trainable)
    spec, prefix = models.model_spec(model, models.weights_for(
        checkpoint, model), image_size, cache_dir=cache_dir, progress=progress,
        force_image_size=force_image_size)
    graph_def, fold_report = (None, None) if trainable else (
        optimize.frozen_inference_graph(spec, prefix, batch_size=batch_size,
                                        moving_average=moving_average))
    representative = (tflite.representative_images(representative_data,
                                                   spec.image_size)
                      if representative_data else None)
    probe = representative[:8] if representative is not None else \
        probe_batch(spec.image_size)
    if batch_size:
        probe = np.resize(probe, (batch_size,) + probe.shape[1:])
    if format == 'saved_model':  # its 'image_bytes' signature is checked too
        encoded = serving.encode_pngs(probe)
        expected = np.concatenate(_source_probabilities(
            spec, prefix, probe,
            serving.preprocess_encoded(encoded, spec.image_size)))
        serving.write_serving_saved_model(graph_def, output,
                                          spec.image_size, batch_size)
        actual = np.concatenate([
            serving.run_serving_saved_model(output, probe),
            serving.run_serving_saved_model(output, encoded=encoded)])
    else:
        expected = _source_probabilities(spec, prefix, probe)
        if trainable:
            actual = keras_models.write_trainable(
                spec, prefix, output, probe, moving_average=moving_average)
        else:
            actual = _write(format, graph_def, output, probe, quantization,
                            representative)
    difference = float(np.max(np.abs(actual - expected)))
    agreement = float(np.mean(actual.argmax(1) == expected.argmax(1)))
    return ExportReport(output, format, quantization, spec,
                        fold_report.folded if fold_report else 0, difference,
                        agreement, len(probe))


def _check_request(output, format, batch_size, quantization,  # pylint: disable=redefined-builtin
                   representative_data, trainable):
    """Refuses, before any work, what cannot be exported as asked."""
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
        tflite.representative_paths(representative_data)


def _write(format, graph_def, output, probe, quantization, representative):  # pylint: disable=redefined-builtin
    """Writes a frozen graph, a TFLite file or a `WRITERS` format; returns
    the probabilities of `probe` from the file written."""
    if format in export_formats.WRITERS:
        return export_formats.WRITERS[format](graph_def, output, probe)
    if format == 'frozen':
        _write_frozen(graph_def, output)
        model = runtimes.TensorFlowRuntime.load(output, rewrite=False)
        try:
            return model.run(probe)
        finally:
            model.close()
    scratch = tempfile.mkdtemp(prefix='slimnets-export-')
    try:
        saved_model_dir = os.path.join(scratch, 'saved_model')
        serving.write_saved_model(graph_def, saved_model_dir)
        content = tflite.tflite_bytes(saved_model_dir, quantization,
                                      representative)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    fileio.write_bytes(fileio.parent_folder_made(output), content)
    return tflite.run_tflite(content, probe)
