"""The SavedModel exports.

`write_saved_model` writes the TF1 SavedModel the TFLite converter reads
(one 'serving_default' signature over float images).
`write_serving_saved_model` writes the TF2 SavedModel for serving, with
two signatures: 'serving_default' (float 'images' [N, size, size, 3] in
[-1, 1]) and 'image_bytes' (a batch of encoded JPEG/PNG/BMP/GIF strings,
Inception eval preprocessing inside), both returning 'logits' and
'probabilities'; empty, undecodable and huge-declared images (more than
`images.MAX_PIXELS` in the header) fail the call with InvalidArgumentError
and the server keeps serving.
"""

import os

import numpy as np
import tensorflow as tf2
import tensorflow.compat.v1 as tf

from slimnets import fileio
from slimnets import images as images_lib
from slimnets import preprocessing
from slimnets.errors import ExportError
from slimnets.graph_format import INPUT_NAME
from slimnets.graph_format import OUTPUT_NAMES

__all__ = ['BYTES_SIGNATURE', 'write_saved_model', 'declared_pixels',
           'checked_decode', 'write_serving_saved_model', 'encode_pngs',
           'preprocess_encoded', 'run_serving_saved_model']

def write_saved_model(graph_def, path):
    if os.path.exists(path):
        raise ExportError('%s exists; remove it or choose another --output'
                          % path)
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(graph_def, name='')
        images = graph.get_tensor_by_name(INPUT_NAME + ':0')
        outputs = {name: graph.get_tensor_by_name(name + ':0')
                   for name in OUTPUT_NAMES}
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


BYTES_SIGNATURE = 'image_bytes'


def _network_function(graph_def):
    """The folded graph as a TF2 concrete function images -> outputs."""
    def import_graph():
        tf.import_graph_def(graph_def, name='')

    wrapped = tf.wrap_function(import_graph, [])
    graph = wrapped.graph
    return wrapped.prune(
        feeds=graph.get_tensor_by_name(INPUT_NAME + ':0'),
        fetches={name: graph.get_tensor_by_name(name + ':0')
                 for name in OUTPUT_NAMES})


def _little_endian(octets, start, count):
    """The unsigned little-endian integer of octets[start:start+count]
    (int64; `octets` a uint8 vector)."""
    value = tf2.constant(0, tf2.int64)
    for index in reversed(range(count)):
        value = value * 256 + tf2.cast(octets[start + index], tf2.int64)
    return value


def _big_endian(octets, start, count):
    value = tf2.constant(0, tf2.int64)
    for index in range(count):
        value = value * 256 + tf2.cast(octets[start + index], tf2.int64)
    return value


def declared_pixels(data):
    """The pixel count (width x height, float64) that the header of one
    encoded image declares, read in the graph without decoding: PNG
    (IHDR), GIF (logical screen), BMP (info header) and JPEG (its frame
    header, `tf.image.extract_jpeg_shape`); 0 for anything else.  The
    graph twin of `slimnets.images.header_size`."""
    head = tf2.strings.substr(data, 0, 26)
    octets = tf2.io.decode_raw(tf2.strings.join([head, '\0' * 26]),
                               tf2.uint8)[:26]
    size = tf2.strings.length(data)

    def product(width, height):
        return tf2.cast(width, tf2.float64) * tf2.cast(height, tf2.float64)

    def png():
        return product(_big_endian(octets, 16, 4), _big_endian(octets, 20, 4))

    def gif():
        return product(_little_endian(octets, 6, 2),
                       _little_endian(octets, 8, 2))

    def bmp():
        def signed(value):
            return tf2.abs(tf2.where(value >= 2 ** 31, value - 2 ** 32, value))
        os2 = tf2.equal(_little_endian(octets, 14, 4), 12)
        return tf2.where(
            os2, product(_little_endian(octets, 18, 2),
                         _little_endian(octets, 20, 2)),
            product(signed(_little_endian(octets, 18, 4)),
                    signed(_little_endian(octets, 22, 4))))

    def jpeg():
        shape = tf2.image.extract_jpeg_shape(data)
        return product(shape[0], shape[1])

    def unknown():
        return tf2.constant(0.0, tf2.float64)

    is_png = tf2.logical_and(tf2.equal(tf2.strings.substr(
        head, 0, 8), b'\x89PNG\r\n\x1a\n'), size >= 24)
    is_gif = tf2.logical_and(tf2.logical_or(
        tf2.equal(tf2.strings.substr(head, 0, 6), b'GIF87a'),
        tf2.equal(tf2.strings.substr(head, 0, 6), b'GIF89a')), size >= 10)
    is_bmp = tf2.logical_and(tf2.equal(tf2.strings.substr(head, 0, 2),
                                       b'BM'), size >= 26)
    is_jpeg = tf2.equal(tf2.strings.substr(head, 0, 2), b'\xff\xd8')
    return tf2.case([(is_png, png), (is_gif, gif), (is_bmp, bmp),
                     (is_jpeg, jpeg)], default=unknown, exclusive=True)


def checked_decode(data, image_size, max_pixels=images_lib.MAX_PIXELS):
    """`preprocessing.decode_and_preprocess` of one encoded image, after
    the checks that keep a serving process up: empty bytes, and a header
    that declares more than `max_pixels` pixels (a few bytes that would
    make the decoder allocate gigabytes), fail with InvalidArgumentError
    naming the problem, as undecodable bytes do, before decoding."""
    not_empty = tf2.debugging.assert_greater(
        tf2.strings.length(data), 0,
        message='image_bytes: an empty string is not an image')
    with tf2.control_dependencies([not_empty]):
        pixels = declared_pixels(data)
    small_enough = tf2.debugging.assert_less_equal(
        pixels, tf2.constant(float(max_pixels), tf2.float64),
        message='image_bytes: the image header declares more than %d pixels '
                '(the limit of slimnets.images.MAX_PIXELS); send a smaller '
                'image' % max_pixels)
    with tf2.control_dependencies([small_enough]):
        return preprocessing.decode_and_preprocess(tf2.identity(data),
                                                   image_size)


def write_serving_saved_model(graph_def, path, image_size, batch_size=None):
    """Writes a TF2 SavedModel with signatures 'serving_default' (float
    images) and 'image_bytes' (encoded images, preprocessing inside)."""
    if os.path.exists(path):
        raise ExportError('%s exists; remove it or choose another --output'
                          % path)
    module = tf2.Module()
    module.network = _network_function(graph_def)

    @tf2.function(input_signature=[tf2.TensorSpec(
        [batch_size, image_size, image_size, 3], tf2.float32, name='images')])
    def serve_images(images):
        return module.network(images)

    @tf2.function(input_signature=[tf2.TensorSpec(
        [batch_size], tf2.string, name=BYTES_SIGNATURE)])
    def serve_bytes(image_bytes):
        images = tf2.map_fn(
            lambda data: checked_decode(data, image_size),
            image_bytes, fn_output_signature=tf2.float32)
        return module.network(images)

    module.serve_images = serve_images
    module.serve_bytes = serve_bytes
    with fileio.atomic_folder(path, create=False) as temporary:
        tf2.saved_model.save(module, temporary, signatures={
            'serving_default': serve_images, BYTES_SIGNATURE: serve_bytes})


def encode_pngs(images):
    """[N, H, W, 3] in [-1, 1] -> N PNG strings (probes for 'image_bytes')."""
    pixels = tf2.cast(tf2.round((tf2.constant(images) + 1) * 127.5), tf2.uint8)
    return [tf2.io.encode_png(image).numpy() for image in pixels]


def preprocess_encoded(encoded, image_size):
    """What 'image_bytes' feeds the network, computed as `Classifier` does."""
    with tf.Graph().as_default(), tf.Session() as sess:
        data = tf.placeholder(tf.string, [])
        image = preprocessing.decode_and_preprocess(data, image_size)
        return np.stack([sess.run(image, {data: item}) for item in encoded])


def run_serving_saved_model(path, images=None, encoded=None):
    """Probabilities from one of the two signatures of a serving SavedModel."""
    loaded = tf2.saved_model.load(path)
    if encoded is not None:
        function = loaded.signatures[BYTES_SIGNATURE]
        return function(image_bytes=tf2.constant(encoded))[
            'probabilities'].numpy()
    return loaded.signatures['serving_default'](images=tf2.constant(images))[
        'probabilities'].numpy()
