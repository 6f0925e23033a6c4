"""Writers for the export formats beyond frozen graph and TFLite.

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

import math
import os
import re

import numpy as np
import tensorflow as tf2
import tensorflow.compat.v1 as tf

from slimnets import fileio
from slimnets import images as images_lib
from slimnets import preprocessing
from slimnets import runtimes
from slimnets.errors import ExportError
from slimnets.graph_format import INPUT_NAME
from slimnets.graph_format import OUTPUT_NAMES

BYTES_SIGNATURE = 'image_bytes'


def _output_path(path):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    return path


# ------------------------------------------------------------------ ONNX

def write_onnx(graph_def, path, probe):
    """Writes an ONNX model; returns ONNX Runtime's probabilities of
    `probe`."""
    model = runtimes.onnx_model(graph_def)
    fileio.write_bytes(path, model.SerializeToString())
    with open(path, 'rb') as handle:
        runtime = runtimes.OnnxRuntime(model_bytes=handle.read())
    return runtime.run(probe)


# -------------------------------------------------------------- OpenVINO

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


# ----------------------------------------------------------------- Keras

def same_padding(size, kernel, stride, dilation=1):
    """TensorFlow's SAME padding of one spatial dimension: (before, after),
    the odd pixel after."""
    effective = (kernel - 1) * dilation + 1
    output = int(math.ceil(size / float(stride)))
    total = max((output - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _layer_name(node_name):
    return re.sub(r'[^A-Za-z0-9_.-]', '_', node_name)


class _KerasBuilder(object):
    """Translates a folded inference GraphDef into Keras layers."""

    def __init__(self, graph_def, keras):
        self.keras = keras
        self.nodes = {node.name: node for node in graph_def.node}
        self.consumers = {}
        for node in graph_def.node:
            for name in node.input:
                producer = name.lstrip('^').split(':')[0]
                self.consumers.setdefault(producer, []).append(node.name)
        self.tensors = {}

    def constant(self, name):
        node = self.nodes[name.split(':')[0]]
        while node.op == 'Identity':
            node = self.nodes[node.input[0].split(':')[0]]
        if node.op != 'Const':
            return None
        return tf.make_ndarray(node.attr['value'].tensor)

    def scalar(self, node):
        """(tensor input name, scalar) of a binary op with one scalar Const
        input, else None."""
        for index in (0, 1):
            value = self.constant(node.input[index])
            if value is not None and value.size == 1:
                return node.input[1 - index], float(value.reshape(()))
        return None

    def tensor(self, name):
        name = name.split(':')[0]
        if name not in self.tensors:
            self.tensors[name] = self.build(self.nodes[name])
        return self.tensors[name]

    def _pad(self, node, x, kernel, strides, dilations):
        padding = node.attr['padding'].s.decode()
        if padding == 'VALID':
            return x
        if padding != 'SAME':
            raise ExportError('cannot export %s to Keras: padding %s' % (
                node.name, padding))
        height, width = x.shape[1], x.shape[2]
        pads = (same_padding(height, kernel[0], strides[0], dilations[0]),
                same_padding(width, kernel[1], strides[1], dilations[1]))
        if pads == ((0, 0), (0, 0)):
            return x
        return self.keras.layers.ZeroPadding2D(
            pads, name=_layer_name(node.name) + '_pad')(x)

    def convolution(self, node, bias=None, name=None):
        layers = self.keras.layers
        kernel = self.constant(node.input[1])
        if kernel is None:
            raise ExportError('cannot export %s to Keras: its weights are '
                              'not constant' % node.name)
        if node.attr['data_format'].s not in (b'NHWC', b''):
            raise ExportError('cannot export %s to Keras: data format %s' % (
                node.name, node.attr['data_format'].s.decode()))
        strides = list(node.attr['strides'].list.i)[1:3]
        dilations = list(node.attr['dilations'].list.i)[1:3] or [1, 1]
        x = self._pad(node, self.tensor(node.input[0]), kernel.shape[:2],
                      strides, dilations)
        arguments = dict(kernel_size=kernel.shape[:2], strides=strides,
                         dilation_rate=dilations, padding='valid',
                         use_bias=bias is not None,
                         name=_layer_name(name or node.name))
        if node.op == 'Conv2D':
            layer = layers.Conv2D(kernel.shape[3], **arguments)
        else:
            layer = layers.DepthwiseConv2D(depth_multiplier=kernel.shape[3],
                                           **arguments)
        output = layer(x)
        layer.set_weights([kernel] + ([bias] if bias is not None else []))
        return output

    def build(self, node):  # pylint: disable=too-many-return-statements,too-many-branches
        layers = self.keras.layers
        name = _layer_name(node.name)
        op = node.op
        if op in ('Conv2D', 'DepthwiseConv2dNative'):
            return self.convolution(node)
        if op == 'BiasAdd':
            producer = self.nodes[node.input[0].split(':')[0]]
            bias = self.constant(node.input[1])
            if producer.op in ('Conv2D', 'DepthwiseConv2dNative') and \
                    len(self.consumers[producer.name]) == 1:
                return self.convolution(producer, bias, name=node.name)
            raise ExportError('cannot export %s to Keras: a bias after %s'
                              % (node.name, producer.op))
        if op == 'Relu6':
            return layers.ReLU(max_value=6.0, name=name)(
                self.tensor(node.input[0]))
        if op == 'Relu':
            return layers.ReLU(name=name)(self.tensor(node.input[0]))
        if op in ('AddV2', 'Add', 'Mul'):
            scalar = self.scalar(node)
            if scalar is not None:
                source, value = scalar
                rescaling = layers.Rescaling(
                    scale=value if op == 'Mul' else 1.0,
                    offset=0.0 if op == 'Mul' else value, name=name)
                return rescaling(self.tensor(source))
            merge = layers.Multiply if op == 'Mul' else layers.Add
            return merge(name=name)([self.tensor(node.input[0]),
                                     self.tensor(node.input[1])])
        if op in ('AvgPool', 'MaxPool'):
            pool = layers.AveragePooling2D if op == 'AvgPool' else \
                layers.MaxPooling2D
            return pool(pool_size=list(node.attr['ksize'].list.i)[1:3],
                        strides=list(node.attr['strides'].list.i)[1:3],
                        padding=node.attr['padding'].s.decode().lower(),
                        name=name)(self.tensor(node.input[0]))
        if op == 'Mean':
            axes = sorted(int(a) for a in np.ravel(self.constant(
                node.input[1])))
            if axes != [1, 2]:
                raise ExportError('cannot export %s to Keras: mean over %s'
                                  % (node.name, axes))
            return layers.GlobalAveragePooling2D(
                keepdims=node.attr['keep_dims'].b, name=name)(
                    self.tensor(node.input[0]))
        if op == 'Pad':
            paddings = self.constant(node.input[1])
            if paddings is None or paddings[0].any() or paddings[3].any():
                raise ExportError('cannot export %s to Keras: padding '
                                  'outside height and width' % node.name)
            return layers.ZeroPadding2D(
                [tuple(int(p) for p in paddings[1]),
                 tuple(int(p) for p in paddings[2])], name=name)(
                     self.tensor(node.input[0]))
        if op in ('Squeeze', 'Reshape'):
            x = self.tensor(node.input[0])
            shape = _reshape_target(node, x)
            return layers.Reshape(shape, name=name)(x)
        if op == 'Softmax':
            return layers.Softmax(name=name)(self.tensor(node.input[0]))
        if op == 'Identity':
            return layers.Identity(name=name)(self.tensor(node.input[0]))
        raise ExportError('cannot export %s to Keras: op %s has no Keras '
                          'layer here' % (node.name, op))


def _reshape_target(node, x):
    """The per-example output shape of a Squeeze or Reshape on `x`."""
    if node.op == 'Squeeze':
        dims = list(node.attr['squeeze_dims'].list.i)
        return tuple(d for i, d in enumerate(x.shape)
                     if i > 0 and (i not in dims if dims else d != 1))
    raise ExportError('cannot export %s to Keras: Reshape' % node.name)


def keras_model(graph_def):
    """A Keras 3 model with input 'input' [N, size, size, 3] and outputs
    {'logits', 'probabilities'} [N, num_classes], from the folded graph."""
    import keras  # pylint: disable=import-outside-toplevel
    builder = _KerasBuilder(graph_def, keras)
    shape = [d.size for d in
             builder.nodes[INPUT_NAME].attr['shape'].shape.dim]
    builder.tensors[INPUT_NAME] = keras.Input(
        shape=tuple(shape[1:]), name=INPUT_NAME)
    outputs = {name: builder.tensor(name) for name in OUTPUT_NAMES}
    return keras.Model(builder.tensors[INPUT_NAME], outputs,
                       name='slimnets')


def write_keras(graph_def, path, probe):
    """Writes a .keras model; returns the reloaded model's probabilities."""
    import keras  # pylint: disable=import-outside-toplevel
    # Keras names the format by the suffix: the temporary keeps it.
    scratch = fileio.temporary_name(_output_path(path)) + '.keras'
    try:
        keras_model(graph_def).save(scratch)
        os.replace(scratch, path)
    finally:
        if os.path.exists(scratch):
            os.remove(scratch)
    loaded = keras.saving.load_model(path)
    return np.asarray(loaded(probe, training=False)['probabilities'])


# ---------------------------------------------------- SavedModel (serving)

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
