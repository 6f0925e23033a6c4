"""`Classifier`: a restored classification graph fed with encoded images."""

import numpy as np
import tensorflow.compat.v1 as tf

from slimnets import checkpoints
from slimnets import models
from slimnets import optimize
from slimnets import quantize
from slimnets import runtimes
from slimnets.errors import InputError
from slimnets.graph_format import INPUT_NAME
from slimnets.graph_format import OUTPUT_NAMES
from slimnets.images import MAX_PIXELS
from slimnets.images import check_image
from slimnets.images import read_image_file
from slimnets.preprocessing import decode_and_preprocess
from slimnets.preprocessing import run_decoding


class Classifier(object):
    """A restored classification graph fed with encoded images.

    Attributes:
      spec: the `ModelSpec` built.
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
                 max_pixels=MAX_PIXELS, runtime='auto'):
        """Builds and restores the classifier.

        Args:
          checkpoint: a checkpoint path or catalogue name; default `model`
            when that is a catalogue name, else `models.DEFAULT_MODEL`
            (fetched into the cache on first use).
          model: a nets_factory or catalogue name (default: inferred).
          image_size: input size (default: the model's).
          moving_average: restore moving-average shadows: 'auto', True, False.
          max_pixels: images whose header names more pixels are refused
            before decoding.
          runtime: one of `slimnets.runtimes.CHOICES`; 'auto' is the
            fastest installed one for the batch size (measured once, then
            remembered in the cache dir).
        """
        self.max_pixels = max_pixels
        self.spec, self.checkpoint = models.model_spec(
            model, models.weights_for(checkpoint, model), image_size,
            cache_dir=cache_dir, progress=progress)
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
                                     model_key='%s%s@%d/%d' % (
                                         self.spec.network, sorted(
                                             self.spec.kwargs.items()),
                                         self.spec.image_size,
                                         self.spec.num_classes))
        self.class_names = models.class_names_for(self.checkpoint,
                                                  self.spec.num_classes)

    def close(self):
        self.runtime.close()
        self.session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def predict(self, encoded_images, names=None):
        """Class probabilities [N, num_classes] of encoded images.

        Raises:
          InputError: an image cannot be decoded (named by `names`).
        """
        encoded_images = list(encoded_images)
        names = names or ['image %d' % i for i in range(len(encoded_images))]
        for name, data in zip(names, encoded_images):
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

    def iter_classify_files(self, paths, top_k=5, batch_size=16):
        """Yields (path, [(index, label, probability)] * top_k) per image
        file, reading and decoding `batch_size` files at a time (memory
        stays flat however many paths are given)."""
        names = self.class_names
        for start in range(0, len(paths), batch_size):
            batch = paths[start:start + batch_size]
            probabilities = self.predict([read_image_file(p) for p in batch],
                                         names=batch)
            for path, row in zip(batch, probabilities):
                top = np.argsort(-row)[:top_k]
                yield path, [(int(i), names[i] if names else str(i),
                              float(row[i])) for i in top]

    def classify_files(self, paths, top_k=5, batch_size=16):
        """[(path, [(index, label, probability)] * top_k)] for image files."""
        return list(self.iter_classify_files(paths, top_k, batch_size))
