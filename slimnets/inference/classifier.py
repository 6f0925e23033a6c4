"""`Classifier`: a restored classification graph fed with encoded images."""

import itertools
import os

import numpy as np
import tensorflow.compat.v1 as tf

from slimnets import checkpoints
from slimnets import optimize
from slimnets import quantize
from slimnets import runtimes
from slimnets.errors import ClosedError
from slimnets.errors import InputError
from slimnets.graph_format import INPUT_NAME
from slimnets.graph_format import OUTPUT_NAMES
from slimnets.images import MAX_PIXELS
from slimnets.images import check_image
from slimnets.images import read_image_file
from slimnets.inference import models
from slimnets.preprocessing import decode_and_preprocess
from slimnets.preprocessing import run_decoding

__all__ = ['Classifier']


class Classifier(object):
    """A restored classification graph fed with encoded images.

    Attributes:
      spec: the `ModelSpec` built.
      model_name: what the weights are, for output: a catalogue name, a
        checkpoint path, or 'mobilenet_v2_1.0_224_quant (embedded)'.
      checkpoint: the restored checkpoint prefix.
      restore_plan: what was restored (shadows used or not).
      graph_def: the folded inference graph (`slimnets.optimize`).
      runtime: the `slimnets.runtimes.Runtime` that runs it on the
        preprocessed images; `runtime.describe()` says which.
      quantized: the checkpoint holds quantization ranges and the graph is
        its fake-quantized `quantize.create_eval_graph` form (run by
        TensorFlow unless `runtime` names another).
    """

    def __init__(self, checkpoint=None, model=None, image_size=None,
                 moving_average='auto', cache_dir=None, progress=True,
                 max_pixels=MAX_PIXELS, runtime='auto',
                 force_image_size=False, num_threads=None):
        """Builds and restores the classifier.

        Args:
          checkpoint: a checkpoint path or catalogue name; default `model`
            when that is a catalogue name, else `models.DEFAULT_MODEL`: the
            embedded copy of Google's quantized v2 1.0_224, which needs no
            network (made into a checkpoint in the cache on first use).
          model: a nets_factory or catalogue name (default: inferred).
          image_size: input size (default: the model's).  A
            quantization-aware checkpoint's recorded calibration size is
            the only one it takes unless `force_image_size`.
          moving_average: restore moving-average shadows: 'auto', True, False.
          max_pixels: images whose header names more pixels are refused
            before decoding.
          runtime: one of `slimnets.runtimes.CHOICES`; 'auto' is the
            fastest installed one for the batch size (measured once, then
            remembered in the cache dir).
          num_threads: the threads the runtime runs on (every runtime
            alike, `slimnets.runtimes.thread_count`); None: every core.
        """
        self.max_pixels = max_pixels
        self._pid = os.getpid()   # TensorFlow sessions do not survive fork
        self._closed = False
        weights = models.weights_for(checkpoint, model)
        self.model_name = models.weights_name(weights)
        self.spec, self.checkpoint = models.model_spec(
            model, weights, image_size, cache_dir=cache_dir,
            progress=progress, force_image_size=force_image_size)
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.encoded = tf.placeholder(tf.string, [None], name='encoded')
            self.images = tf.map_fn(
                lambda e: decode_and_preprocess(e, self.spec.image_size),
                self.encoded, fn_output_signature=tf.float32)
            inputs = tf.placeholder(tf.float32, [None] + [
                self.spec.image_size] * 2 + [3], name=INPUT_NAME)
            self.logits, _ = models.build_network(self.spec, inputs)
            # A QAT checkpoint runs as its fake-quantized eval graph.
            self.quantized = quantize.has_quantization_ranges(
                self.checkpoint)
            if self.quantized:
                quantize.create_eval_graph(self.graph)
            tf.identity(self.logits, name=OUTPUT_NAMES[0])
            self.probabilities = tf.nn.softmax(self.logits,
                                               name=OUTPUT_NAMES[1])
        self.session = tf.Session(graph=self.graph)
        self.restore_plan = checkpoints.restore(
            self.session, self.checkpoint, moving_average=moving_average)
        self.graph.finalize()
        self.graph_def, _ = optimize.optimize_for_inference(
            optimize.freeze_session(self.session))
        if self.quantized and runtime == 'auto':
            runtime = 'tensorflow'  # runs the fake-quant ops as trained
        self.runtime = runtimes.load(self.graph_def, runtime,
                                     cache_dir=cache_dir,
                                     num_threads=num_threads,
                                     model_key='%s%s@%d/%d' % (
                                         self.spec.network, sorted(
                                             self.spec.kwargs.items()),
                                         self.spec.image_size,
                                         self.spec.num_classes))
        self.class_names = models.class_names_for(self.checkpoint,
                                                  self.spec.num_classes)

    def close(self):
        """Frees the sessions and the runtime; any later call raises
        `ClosedError`.  Closing twice is harmless.  In a forked child it
        only marks this copy closed (the parent's sessions are not
        touched from there)."""
        if self._closed:
            return
        self._closed = True
        if os.getpid() == self._pid:
            self.runtime.close()
            self.session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _check_usable(self):
        if self._closed:
            raise ClosedError('this Classifier is closed; create a new one')
        if os.getpid() != self._pid:
            raise ClosedError(
                'this Classifier was created in process %d and cannot be used '
                'in the forked process %d (TensorFlow sessions do not survive '
                'fork); create the Classifier in the child, or start workers '
                'with multiprocessing.get_context("spawn")'
                % (self._pid, os.getpid()))

    def _empty_result(self):
        return np.zeros([0, self.spec.num_classes], np.float32)

    def predict(self, encoded_images, names=None):
        """Class probabilities [N, num_classes] of encoded images.

        Args:
          encoded_images: a list of N encoded image files (bytes: JPEG,
            PNG, BMP or GIF); for a float batch use `predict_images`.
          names: N names for the messages (default 'image I').

        Returns:
          float32 [N, num_classes] ([0, num_classes] for no images).

        Raises:
          InputError: not a list of bytes, or an image cannot be decoded
            (named by `names`).  ClosedError: after `close()` or in a
            forked child.
        """
        self._check_usable()
        encoded_images = _encoded_list(encoded_images)
        if names is None:
            names = ['image %d' % i for i in range(len(encoded_images))]
        names = [str(n) for n in names]
        if len(names) != len(encoded_images):
            raise InputError('%d names for %d images: give one name per '
                             'image' % (len(names), len(encoded_images)))
        if not encoded_images:
            return self._empty_result()
        for name, data in zip(names, encoded_images):
            if not data:
                raise InputError('%s is empty (0 bytes), not an image' % name)
            check_image(data, name, self.max_pixels)
        try:
            images = run_decoding(self.session, self.images,
                                  {self.encoded: encoded_images})
        except tf.errors.InvalidArgumentError:
            for name, data in zip(names, encoded_images):
                try:
                    run_decoding(self.session, self.images,
                                 {self.encoded: [data]})
                except tf.errors.InvalidArgumentError:
                    raise InputError('cannot decode image %s: it is not a '
                                     'JPEG, PNG, BMP or GIF file, or it is '
                                     'damaged' % name) from None
            raise
        return self.runtime.run(images)

    def predict_images(self, images):
        """Class probabilities of preprocessed images.

        Args:
          images: float [N, size, size, 3] (size: `spec.image_size`),
            values in [-1, 1] (`slimnets.preprocessing`'s Inception eval
            preprocessing: x / 127.5 - 1 of the resized pixels), finite;
            float16/64 are taken as float32.

        Returns:
          float32 [N, num_classes] ([0, num_classes] for N = 0).

        Raises:
          InputError: not such an array (the message says what differs).
          ClosedError: after `close()` or in a forked child.
        """
        self._check_usable()
        size = self.spec.image_size
        wanted = '[N, %d, %d, 3] float32 in [-1, 1]' % (size, size)
        if isinstance(images, (bytes, str, list, tuple)) and images and \
                isinstance(images[0], (bytes, bytearray, str)):
            raise InputError('predict_images takes a float array %s; for '
                             'encoded image files use predict, for paths '
                             'classify_files' % wanted)
        try:
            array = np.asarray(images)
        except (TypeError, ValueError) as error:
            raise InputError('predict_images takes a float array %s, not %s '
                             '(%s)' % (wanted, type(images).__name__,
                                       error)) from None
        if not np.issubdtype(array.dtype, np.floating):
            hint = ('; scale 0-255 pixels with x / 127.5 - 1'
                    if np.issubdtype(array.dtype, np.integer) else '')
            raise InputError('predict_images takes %s, got dtype %s%s' % (
                wanted, array.dtype, hint))
        if array.ndim != 4 or tuple(array.shape[1:]) != (size, size, 3):
            hint = ('; add the batch axis: images[None]' if array.ndim == 3
                    else '')
            raise InputError('predict_images takes %s (this model\'s size), '
                             'got shape %s%s' % (wanted, list(array.shape),
                                                 hint))
        if not len(array):
            return self._empty_result()
        array = array.astype(np.float32, copy=False)
        if not np.all(np.isfinite(array)):
            raise InputError('predict_images: the images hold NaN or infinite '
                             'values')
        low, high = float(array.min()), float(array.max())
        if low < -1 - _RANGE_SLACK or high > 1 + _RANGE_SLACK:
            raise InputError(
                'predict_images takes values in [-1, 1], got [%.4g, %.4g]%s' % (
                    low, high, '; scale 0-255 pixels with x / 127.5 - 1'
                    if high > 2 else ''))
        return self.runtime.run(array)

    def iter_classify_files(self, paths, top_k=5, batch_size=16, read=None):
        """Yields (path, [(index, label, probability)] * top_k) per image
        file, reading and decoding `batch_size` files at a time: `paths`
        may be any iterable (a generator too) and is consumed as it goes,
        so memory and open files stay flat however many are given.

        `read(path) -> bytes` reads one (default `images.read_image_file`).

        Raises:
          InputError: `paths` is one string, `top_k` is not 1..num_classes,
            `batch_size` is not a whole number >= 1, or an image is
            missing or damaged.  ClosedError: after `close()`.
        """
        self._check_usable()
        if isinstance(paths, (str, bytes, os.PathLike)):
            raise InputError('give a list of image paths, not one path: '
                             '[%r]' % (paths,))
        classes = self.spec.num_classes
        top_k = _whole_number('top_k', top_k)
        if top_k > classes:
            raise InputError('top_k is %d but the model has %d classes: give '
                             'at most %d' % (top_k, classes, classes))
        batch_size = _whole_number('batch_size', batch_size)
        read = read or read_image_file
        names = self.class_names
        paths = iter(paths)
        while True:
            batch = list(itertools.islice(paths, batch_size))
            if not batch:
                return
            probabilities = self.predict([read(p) for p in batch],
                                         names=batch)
            for path, row in zip(batch, probabilities):
                top = np.argsort(-row)[:top_k]
                yield path, [(int(i), names[i] if names else str(i),
                              float(row[i])) for i in top]

    def classify_files(self, paths, top_k=5, batch_size=16):
        """[(path, [(index, label, probability)] * top_k)] for image files
        (see `iter_classify_files`)."""
        return list(self.iter_classify_files(paths, top_k, batch_size))


# Values a little outside [-1, 1] (float rounding of other preprocessing)
# are taken.
_RANGE_SLACK = 1e-3


def _whole_number(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
            or value < 1:
        raise InputError('%s must be a whole number >= 1, got %r' % (
            name, value))
    return int(value)


def _encoded_list(encoded_images):
    """`encoded_images` as a list of bytes, or an InputError saying what
    `predict` takes."""
    if isinstance(encoded_images, np.ndarray) and encoded_images.dtype.kind \
            in 'fiub' or hasattr(encoded_images, 'numpy') and \
            hasattr(encoded_images, 'dtype'):
        raise InputError('predict takes encoded image files (a list of JPEG, '
                         'PNG, BMP or GIF bytes); for a float array [N, H, W, '
                         '3] in [-1, 1] use Classifier.predict_images')
    if isinstance(encoded_images, (bytes, bytearray)):
        raise InputError('predict takes a list of encoded images; for one '
                         'image give [data]')
    if isinstance(encoded_images, str):
        raise InputError('predict takes encoded image bytes, not a path: '
                         'use classify_files([%r])' % encoded_images)
    try:
        encoded_images = list(encoded_images)
    except TypeError:
        raise InputError('predict takes a list of encoded images (bytes), not '
                         '%s' % type(encoded_images).__name__) from None
    for index, data in enumerate(encoded_images):
        if isinstance(data, np.bytes_):
            encoded_images[index] = bytes(data)
        elif isinstance(data, (bytearray, memoryview)):
            encoded_images[index] = bytes(data)
        elif not isinstance(data, bytes):
            raise InputError(
                'predict takes encoded image files (bytes); image %d is %s%s'
                % (index, type(data).__name__,
                   ': read the file, or use classify_files for paths'
                   if isinstance(data, (str, os.PathLike)) else
                   '; for float arrays use Classifier.predict_images'))
    return encoded_images
