"""Image files: reading them, and decoding plus preprocessing in the graph.

The networks take [N, size, size, 3] float images in [-1, 1]; these helpers
turn encoded files (JPEG, PNG, BMP, GIF) into that with Inception eval
preprocessing (`slimnets.preprocessing`).
"""

import os

import tensorflow.compat.v1 as tf

from slimnets import preprocessing
from slimnets.errors import InputError

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif')


def decode_and_preprocess(encoded, image_size):
    """Encoded image bytes (scalar string) -> [size, size, 3] in [-1, 1]."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return preprocessing.preprocess_for_eval(image, image_size, image_size)


def read_image_file(path):
    """The bytes of an image file; InputError when it is missing."""
    if os.path.isdir(path):
        raise InputError('%s is a folder, not an image file' % path)
    if not os.path.isfile(path):
        raise InputError('image not found: %s' % path)
    with open(path, 'rb') as handle:
        return handle.read()
