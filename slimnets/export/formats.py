"""The export formats' writers beyond frozen graph, SavedModel and TFLite
(`WRITERS`), and the check of an output path for each format.

Each writer takes the folded inference graph (`slimnets.optimize`: input
'input' [N, size, size, 3] in [-1, 1], outputs 'logits' and
'probabilities' [N, num_classes]), writes the artifact, loads it back with
its own runtime and returns the probabilities of a probe batch, which
`slimnets.export` compares with the TensorFlow graph:

  onnx         tf2onnx at opset `runtimes.ONNX_OPSET`, run by ONNX Runtime;
  openvino     an IR (.xml + .bin, float32 weights) from
               `openvino.convert_model`, run by OpenVINO in float32;
  keras        a Keras 3 functional model of Keras layers (Conv2D,
               DepthwiseConv2D, ReLU, Add, Multiply, Rescaling, pooling,
               Softmax), saved as .keras and loadable by
               `keras.saving.load_model` without slimnets; TensorFlow's
               SAME padding (more at the bottom and right when the total is
               odd) is made explicit with ZeroPadding2D so that every Keras
               backend pads as slim did;
  saved_model  a TF2 SavedModel with two signatures: 'serving_default'
               (float 'images' [N, size, size, 3] in [-1, 1]) and
               'image_bytes' (a batch of encoded JPEG/PNG/BMP/GIF strings,
               Inception eval preprocessing inside), both returning
               'logits' and 'probabilities'; empty, undecodable and
               huge-declared images (more than `images.MAX_PIXELS` in the
               header) fail the call with InvalidArgumentError and the
               server keeps serving.
"""

import os

from slimnets import fileio
from slimnets import runtimes
from slimnets.errors import ExportError
from slimnets.export.keras import write_keras

__all__ = ['WRITERS', 'write_onnx', 'write_openvino', 'check_output']

def write_onnx(graph_def, path, probe):
    """Writes an ONNX model; returns ONNX Runtime's probabilities of
    `probe`."""
    model = runtimes.onnx_model(graph_def)
    fileio.write_bytes(path, model.SerializeToString())
    with open(path, 'rb') as handle:
        runtime = runtimes.OnnxRuntime(model_bytes=handle.read())
    return runtime.run(probe)


def write_openvino(graph_def, path, probe):
    """Writes an OpenVINO IR (`path` ends in .xml; the weights go to .bin
    beside it); returns OpenVINO's probabilities of `probe`."""
    ov = runtimes.require('openvino', 'openvino')
    # save_model halves the weights to float16 unless told not to (then
    # about 4e-3 off on the probabilities).
    model = runtimes.openvino_model(graph_def)
    weights = os.path.splitext(path)[0] + '.bin'
    # Both files are written under temporary names, then swapped in.
    with fileio.atomic_files([path, weights]) as (xml, _):
        ov.save_model(model, xml, compress_to_fp16=False)
    runtime = runtimes.OpenVINORuntime(model=ov.Core().read_model(path))
    return runtime.run(probe)


WRITERS = {'onnx': write_onnx, 'openvino': write_openvino,
           'keras': write_keras}


_FILE_SUFFIXES = {'frozen': '.pb', 'tflite': '.tflite', 'onnx': '.onnx'}


_SUFFIXES = {'openvino': ('.xml', 'an OpenVINO IR is a .xml file (with a .bin '
                                  'beside it): use --output model.xml'),
             'keras': ('.keras', 'a Keras model is a .keras file: use '
                                 '--output model.keras')}


def check_output(format, path):  # pylint: disable=redefined-builtin
    """Refuses an output path the format cannot be written to, before any
    work is done: a missing suffix, a folder (or anything but a file) where
    a file format writes, anything at all where a SavedModel folder goes.

    Raises:
      ExportError: naming what is in the way and the way out.
    """
    suffix, message = _SUFFIXES.get(format, (None, None))
    if suffix and not path.endswith(suffix):
        raise ExportError(message)
    if format == 'saved_model':
        if os.path.lexists(path):
            raise ExportError(
                '%s already exists (%s); a SavedModel is written as a new '
                'folder: remove it or choose another --output' % (
                    path, 'a folder' if os.path.isdir(path) else 'a file'))
        return
    if os.path.isdir(path):
        raise ExportError(
            '%s is a directory, and --format %s writes a file: a directory '
            'is in the way. Name a file, e.g. --output %s, or move the '
            'directory away' % (path, format, os.path.join(
                path, 'model' + (suffix or _FILE_SUFFIXES.get(format, '')))))
    if os.path.lexists(path) and not os.path.isfile(path):
        raise ExportError('%s exists and is not a regular file (a link to '
                          'nothing, a FIFO or a device); slimnets does not '
                          'replace it: choose another --output' % path)
