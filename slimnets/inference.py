"""Classification with a checkpoint: model resolution, images, top-k, eval.

`Classifier(checkpoint=..., model=...)` builds the network with Inception
eval preprocessing in one graph, restores the checkpoint (moving-average
shadows when present) and classifies encoded images (JPEG, PNG, BMP, GIF).
`evaluate(...)` computes top-1/top-5 over a folder of class folders or
slim-format TFRecords.
"""

import collections
import glob
import json
import logging
import os
import re

import numpy as np
import tensorflow.compat.v1 as tf

from slimnets import checkpoints
from slimnets.errors import InputError  # noqa: F401  (public here too)
from slimnets import labels as labels_lib
from slimnets import nets_factory
from slimnets import preprocessing

_log = logging.getLogger(__name__)

ModelSpec = collections.namedtuple('ModelSpec', [
    'network', 'kwargs', 'image_size', 'num_classes'])

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif')


def base_network(name):
    """'mobilenet_v1_025' -> 'mobilenet_v1', 'mobilenet_edgetpu_075' -> ..."""
    head, _, tail = name.rpartition('_')
    return head if tail.isdigit() and head in nets_factory.networks_map else name


def _kwargs_from_identity(identity):
    kwargs = {}
    if identity.depth_multiplier is not None:
        kwargs['depth_multiplier'] = identity.depth_multiplier
    if identity.finegrain and identity.family in ('v2', 'v3', 'edgetpu'):
        kwargs['finegrain_classification_mode'] = True
    if identity.variant and identity.variant.endswith('_DETECTION'):
        raise InputError('the checkpoint holds a detection backbone (%s) '
                         'without a classifier head' % identity.variant)
    return kwargs


_PUBLISHED_NAME = re.compile(r'(?:^|[_/-])(\d\.\d+)_(\d{2,3})(?=$|[_/.-])')


def size_from_name(prefix, depth_multiplier):
    """The input size a published-style path names ('.../0.25_128/...').

    Only trusted when the depth in the name is the checkpoint's own.
    """
    for depth, size in _PUBLISHED_NAME.findall(prefix or ''):
        if depth_multiplier is not None and abs(
                float(depth) - depth_multiplier) < 1e-6:
            return int(size)
    return None


def model_spec(model=None, checkpoint=None, image_size=None, num_classes=None,
               cache_dir=None, progress=True):
    """Works out which network to build for a checkpoint.

    Args:
      model: a nets_factory name, a catalogue name, or None: the network
        recorded beside the checkpoint by `slimnets train` (model.json), else
        inferred from the checkpoint's variables.
      checkpoint: a checkpoint path or catalogue name (fetched if needed).
      image_size: input size; default the catalogue's, else the size a
        published-style path names ('0.25_128'), else the network's.
      num_classes: default the checkpoint's.

    Returns:
      (ModelSpec, checkpoint prefix or None).

    Raises:
      InputError: unknown model name, or a checkpoint of another network.
    """
    item = None
    if model is not None and model not in nets_factory.networks_map:
        try:
            item = checkpoints.entry(model)
        except KeyError:
            raise InputError('unknown model %r: use a network (%s) or a '
                             'catalogue name (`slimnets list`)' % (
                                 model, ', '.join(sorted(
                                     nets_factory.networks_map)))) from None
    if item is None and checkpoint is not None and not os.path.exists(
            checkpoint + '.index') and os.sep not in checkpoint:
        try:
            item = checkpoints.entry(checkpoint)
        except KeyError:
            item = None
    prefix = checkpoints.resolve(checkpoint, cache_dir=cache_dir,
                                 progress=progress) if checkpoint else None

    identity = checkpoints.identify(checkpoints.variable_shapes(prefix)) \
        if prefix else None
    recorded = read_model_file(prefix) if prefix else None
    if recorded is not None and model is None:
        return recorded._replace(
            image_size=int(image_size or recorded.image_size),
            num_classes=int(num_classes or recorded.num_classes)), prefix
    if model in nets_factory.networks_map:
        network = model
    elif item is not None:
        network = item.network
    elif identity is not None and identity.network:
        network = identity.network
    else:
        raise InputError('cannot tell which network %s holds (%s); pass '
                         '--model' % (prefix, checkpoints.describe(identity)
                                      if identity else 'no checkpoint'))

    if identity is not None and identity.family is not None:
        if base_network(identity.network or '') != base_network(network):
            raise InputError('the checkpoint %s holds %s, not %s' % (
                prefix, checkpoints.describe(identity), network))
        kwargs = _kwargs_from_identity(identity)
    elif item is not None:
        kwargs = dict(item.network_kwargs)
    else:
        kwargs = {}
    if image_size is None and item is not None:
        image_size = item.input_size
    if image_size is None and identity is not None:
        image_size = size_from_name(prefix, identity.depth_multiplier)
    if image_size is None:
        image_size = nets_factory.get_network_fn(network, 1).default_image_size
    if num_classes is None:
        num_classes = (identity.num_classes if identity and
                       identity.num_classes else 1001)
    return ModelSpec(network, kwargs, int(image_size), int(num_classes)), prefix


def build_network(spec, images, is_training=False):
    """Builds `spec` on `images` [N, size, size, 3] under its arg scope.

    Returns:
      (logits [N, num_classes], end_points).
    """
    network_fn = nets_factory.get_network_fn(spec.network, spec.num_classes,
                                             is_training=is_training)
    return network_fn(images, **spec.kwargs)


def decode_and_preprocess(encoded, image_size):
    """Encoded image bytes (scalar string) -> [size, size, 3] in [-1, 1]."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return preprocessing.preprocess_for_eval(image, image_size, image_size)


def read_image_file(path):
    """The bytes of an image file; InputError when it is missing."""
    if not os.path.isfile(path):
        raise InputError('image not found: %s' % path)
    with open(path, 'rb') as handle:
        return handle.read()


LABELS_FILE = 'labels.txt'
MODEL_FILE = 'model.json'


def write_model_file(folder, spec):
    """Records which network a folder's checkpoints are (see read_model_file)."""
    with open(os.path.join(folder, MODEL_FILE), 'w') as handle:
        json.dump(spec._asdict(), handle, indent=1)


def read_model_file(prefix):
    """The ModelSpec recorded beside a checkpoint, or None."""
    path = os.path.join(os.path.dirname(prefix), MODEL_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as handle:
        return ModelSpec(**json.load(handle))


def class_names_for(prefix, num_classes):
    """Class names of a checkpoint: its folder's labels.txt (written by
    `slimnets train`), else ImageNet's for 1001 or 1000 classes, else None."""
    path = os.path.join(os.path.dirname(prefix), LABELS_FILE)
    if os.path.isfile(path):
        with open(path) as handle:
            names = [line.strip() for line in handle if line.strip()]
        if len(names) == num_classes:
            return names
    if num_classes == 1001:
        return labels_lib.imagenet_labels()
    if num_classes == 1000:
        return labels_lib.imagenet_labels()[1:]
    return None


class Classifier(object):
    """A restored classification graph fed with encoded images.

    Attributes:
      spec: the `ModelSpec` built.
      checkpoint: the restored checkpoint prefix.
      restore_plan: what was restored (shadows used or not).
    """

    def __init__(self, checkpoint, model=None, image_size=None,
                 moving_average='auto', cache_dir=None, progress=True):
        self.spec, self.checkpoint = model_spec(model, checkpoint, image_size,
                                                cache_dir=cache_dir,
                                                progress=progress)
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.encoded = tf.placeholder(tf.string, [None], name='encoded')
            self.images = tf.map_fn(
                lambda e: decode_and_preprocess(e, self.spec.image_size),
                self.encoded, fn_output_signature=tf.float32)
            self.logits, _ = build_network(self.spec, self.images)
            self.probabilities = tf.nn.softmax(self.logits)
        self.session = tf.Session(graph=self.graph)
        self.restore_plan = checkpoints.restore(
            self.session, self.checkpoint, moving_average=moving_average)
        self.graph.finalize()
        self.class_names = class_names_for(self.checkpoint,
                                           self.spec.num_classes)

    def close(self):
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
        try:
            return self.session.run(self.probabilities,
                                    {self.encoded: list(encoded_images)})
        except tf.errors.InvalidArgumentError:
            names = names or ['image %d' % i for i in range(len(encoded_images))]
            for name, data in zip(names, encoded_images):
                try:
                    self.session.run(self.images, {self.encoded: [data]})
                except tf.errors.InvalidArgumentError:
                    raise InputError('cannot decode image %s: it is not a '
                                     'JPEG, PNG, BMP or GIF file, or it is '
                                     'damaged' % name) from None
            raise

    def classify_files(self, paths, top_k=5):
        """[(path, [(index, label, probability)] * top_k)] for image files."""
        data = [read_image_file(p) for p in paths]
        probabilities = self.predict(data, names=paths)
        names = self.class_names
        results = []
        for path, row in zip(paths, probabilities):
            top = np.argsort(-row)[:top_k]
            results.append((path, [(int(i), names[i] if names else str(i),
                                    float(row[i])) for i in top]))
        return results


# ------------------------------------------------------------------ eval

def _folder_examples(folder, num_classes, class_names=None):
    """[(path, label)] from one sub-folder per class (synset or name).

    With `class_names` (a fine-tuned model's labels.txt) the folder names
    index into them; otherwise into the ImageNet labels.
    """
    examples = []
    classes = sorted(d for d in os.listdir(folder)
                     if os.path.isdir(os.path.join(folder, d)))
    if not classes:
        raise InputError('%s has no class sub-folders (expected one folder '
                         'per class, named by synset id or label name)'
                         % folder)
    for class_name in classes:
        try:
            if class_names is not None and num_classes not in (1000, 1001):
                label = class_names.index(class_name)
            else:
                label = labels_lib.label_index(class_name, num_classes)
        except (KeyError, ValueError):
            raise InputError('class folder %r in %s is not one of the '
                             "model's classes (an ImageNet synset id or label "
                             'name, or a name in its labels.txt)'
                             % (class_name, folder)) from None
        for name in sorted(os.listdir(os.path.join(folder, class_name))):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                examples.append((os.path.join(folder, class_name, name), label))
    return examples


def _tfrecord_examples(files):
    """[(encoded bytes, label)] from slim-format TFRecords."""
    examples = []
    for path in files:
        for record in tf.io.tf_record_iterator(path):
            example = tf.train.Example.FromString(record)
            feature = example.features.feature
            if 'image/encoded' not in feature or \
                    'image/class/label' not in feature:
                raise InputError('%s is not a slim image TFRecord (needs '
                                 'image/encoded and image/class/label)' % path)
            examples.append((feature['image/encoded'].bytes_list.value[0],
                             int(feature['image/class/label'].int64_list.value[0])))
    return examples


def evaluation_examples(data, num_classes, class_names=None):
    """[(encoded bytes or path, label)] from a class-folder tree or TFRecords."""
    if os.path.isdir(data):
        records = sorted(glob.glob(os.path.join(data, '*.tfrecord*')) +
                         glob.glob(os.path.join(data, '*-of-*')))
        if records:
            return _tfrecord_examples(records)
        return _folder_examples(data, num_classes, class_names)
    if os.path.isfile(data):
        return _tfrecord_examples([data])
    raise InputError('no evaluation data at %s' % data)


def evaluate(checkpoint, data, model=None, batch_size=32, max_images=None,
             progress=True, moving_average='auto', cache_dir=None):
    """Top-1 and top-5 accuracy of a checkpoint on labelled images.

    Returns:
      A dict: network, checkpoint, images, top1, top5, and the spec.
    """
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel
    classifier = Classifier(checkpoint, model, moving_average=moving_average,
                            cache_dir=cache_dir, progress=progress)
    try:
        examples = evaluation_examples(data, classifier.spec.num_classes,
                                       classifier.class_names)
        if max_images:
            examples = examples[:max_images]
        if not examples:
            raise InputError('no images found in %s' % data)
        top1 = top5 = 0
        with tqdm(total=len(examples), unit='img', disable=not progress,
                  leave=False) as bar:
            for start in range(0, len(examples), batch_size):
                batch = examples[start:start + batch_size]
                encoded = [read_image_file(x) if isinstance(x, str) else x
                           for x, _ in batch]
                names = [x if isinstance(x, str) else 'record %d' % (start + i)
                         for i, (x, _) in enumerate(batch)]
                probabilities = classifier.predict(encoded, names)
                ranked = np.argsort(-probabilities, axis=1)
                for row, (_, label) in zip(ranked, batch):
                    top1 += int(row[0] == label)
                    top5 += int(label in row[:5])
                bar.update(len(batch))
        count = len(examples)
        return {'network': classifier.spec.network,
                'network_kwargs': classifier.spec.kwargs,
                'image_size': classifier.spec.image_size,
                'checkpoint': classifier.checkpoint,
                'moving_average': classifier.restore_plan.moving_average,
                'images': count, 'top1': top1 / count, 'top5': top5 / count}
    finally:
        classifier.close()

