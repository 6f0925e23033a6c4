"""The TFLite export: float, float16, dynamic-range and int8 (calibrated on
representative images), converted from a SavedModel by TensorFlow's TFLite
converter, and run image by image to check it."""

import glob
import os
import warnings

import numpy as np
import tensorflow as tf2
import tensorflow.compat.v1 as tf

from slimnets import images as images_lib
from slimnets import preprocessing
from slimnets.errors import ExportError
from slimnets.errors import InputError

__all__ = ['representative_paths', 'representative_images', 'tflite_bytes',
           'run_tflite']

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


def tflite_bytes(saved_model_dir, quantization, representative):
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
