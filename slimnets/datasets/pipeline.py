"""Labelled images for evaluation and training, streamed through tf.data.

Accepted data (`find_source`):

* a class-folder tree: one sub-folder per class.  For evaluation the
  folder names are ImageNet synset ids or label names, or names in a
  fine-tuned model's labels.txt; for training they are the classes, in
  sorted order from 0;
* slim TFRecords (`image/encoded`, `image/class/label`, as `slimnets data
  build` and research/slim's converters write them): one file, a folder of
  shards (`*.tfrecord*`, `*-of-*`), or a glob;
* research/slim's `dataset_dir` with a split: the folder's `SPLIT-*`
  shards (ImageNet), `*_SPLIT_*.tfrecord` (flowers) or `*_SPLIT.tfrecord`
  (cifar10, mnist).  A folder holding several splits and no split named
  gives evaluation the validation (else test) split and training the train
  split.

Memory stays bounded whatever the dataset size: only the file list (image
paths, or TFRecord files) is held; records are read by an interleave across
shards, decoded and preprocessed by a parallel map (AUTOTUNE), shuffled
through a bounded buffer for training and prefetched.

Evaluation order is stable (no shuffling, deterministic interleave), so
`--max-images`, `shard` and `num_shards` select the same images on every
run; shard K of N takes every N-th example of the stream from the K-th.
"""

import numpy as np
import tensorflow.compat.v1 as tf

from slimnets import preprocessing
from slimnets.datasets.records import AUTOTUNE
from slimnets.datasets.records import CYCLE_LENGTH
from slimnets.datasets.records import ENCODED
from slimnets.datasets.records import LABEL
from slimnets.datasets.records import parse_record
from slimnets.datasets.records import read_error
from slimnets.datasets.records import read_records
from slimnets.datasets.sources import evaluation_source
from slimnets.errors import InputError
from slimnets.images import MAX_PIXELS
from slimnets.images import check_image

__all__ = ['SHUFFLE_BUFFER', 'shard_size', 'iterate', 'evaluation_dataset',
           'explain_failure', 'training_dataset', 'evaluation_examples']



SHUFFLE_BUFFER = 10000        # training examples shuffled at once


def _cut(dataset, shard, num_shards, max_images):
    """The first `max_images`, then every `num_shards`-th from `shard`."""
    if max_images:
        dataset = dataset.take(max_images)
    if num_shards:
        dataset = dataset.shard(num_shards, shard)
    return dataset


def shard_size(count, shard=None, num_shards=None, max_images=None):
    """How many of `count` examples `_cut` keeps."""
    if max_images:
        count = min(count, max_images)
    return len(range(shard or 0, count, num_shards or 1))


def _encoded_stream(source, strict=True, shard=None, num_shards=None,
                    max_images=None):
    """(encoded bytes, label) in a stable order, sharded and cut."""
    if source.kind == 'folder':
        dataset = tf.data.Dataset.from_tensor_slices(
            (source.files, np.array(source.labels, np.int64)))
        return _cut(dataset, shard, num_shards, max_images).map(
            lambda path, label: (tf.io.read_file(path), label),
            num_parallel_calls=AUTOTUNE)
    dataset = _cut(read_records(source.files), shard, num_shards, max_images)
    return dataset.map(lambda record: parse_record(record, strict),
                       num_parallel_calls=AUTOTUNE)


def _names(source, shard=None, num_shards=None, max_images=None):
    """Names of the examples of `_encoded_stream`, in the same order (a
    path, or 'FILE record K'), as a Python generator."""
    if source.kind == 'folder':
        names = source.files[:max_images] if max_images else source.files
        yield from names[shard or 0::num_shards or 1]
        return
    dataset = tf.data.Dataset.from_tensor_slices(source.files).interleave(
        lambda path: tf.data.TFRecordDataset(path).enumerate().map(
            lambda index, _: (path, index)),
        cycle_length=min(len(source.files), CYCLE_LENGTH),
        num_parallel_calls=AUTOTUNE, deterministic=True)
    for path, index in iterate(_cut(dataset, shard, num_shards, max_images)):
        yield '%s record %d' % (path.decode(), index)


def iterate(dataset):
    """numpy values of a dataset, from a session on the current graph."""
    next_value = tf.data.make_one_shot_iterator(dataset).get_next()
    # Not `with tf.Session()`: a generator must not hold a default-graph
    # context while its caller enters others.
    sess = tf.Session(graph=next_value[0].graph if isinstance(
        next_value, tuple) else next_value.graph)
    try:
        while True:
            try:
                yield preprocessing.run_decoding(sess, next_value)
            except tf.errors.OutOfRangeError:
                return
    finally:
        sess.close()


def _size_ok(max_pixels):
    def check(data):
        try:
            check_image(data, 'image', max_pixels)
        except InputError:
            return False
        return True
    return lambda encoded: tf.numpy_function(check, [encoded], tf.bool,
                                             stateful=False)


def evaluation_dataset(source, image_size, batch_size, max_images=None,
                       shard=None, num_shards=None, max_pixels=MAX_PIXELS):
    """Batches (images [B, size, size, 3] in [-1, 1], labels [B] int64),
    eval-preprocessed in the current graph (Inception eval preprocessing,
    as `Classifier` applies it); the last batch may be smaller.

    Images whose header names more than `max_pixels` pixels, or which
    cannot be decoded, fail the iterator; `explain_failure` names them.
    """
    size_ok = _size_ok(max_pixels) if max_pixels else None

    def preprocess(encoded, label):
        checks = []
        if size_ok is not None:
            checks.append(tf.debugging.Assert(size_ok(encoded), [
                'an image is larger than max_pixels']))
        with tf.control_dependencies(checks):
            image = preprocessing.decode_and_preprocess(encoded, image_size)
        return image, label

    dataset = _encoded_stream(source, True, shard, num_shards, max_images)
    dataset = dataset.map(preprocess, num_parallel_calls=AUTOTUNE)
    return dataset.batch(batch_size).prefetch(AUTOTUNE)


def explain_failure(source, error, check, batch_size=32, shard=None,
                    num_shards=None, max_images=None):
    """The InputError for a failed evaluation stream: reads the raw stream
    again and hands each batch of (encoded images, names) to `check` (which
    raises InputError naming a bad image); a record without image/encoded
    or image/class/label is named here.
    """
    with tf.Graph().as_default():
        dataset = _encoded_stream(source, False, shard, num_shards,
                                  max_images).batch(batch_size)
        names = _names(source, shard, num_shards, max_images)
        try:
            for encoded, labels in iterate(dataset):
                batch_names = [next(names) for _ in range(len(encoded))]
                for name, data, label in zip(batch_names, encoded, labels):
                    if not data or label < 0:
                        raise InputError(
                            '%s is not a slim image record (needs %s and %s)'
                            % (name, ENCODED, LABEL))
                check(list(encoded), batch_names)
        except tf.errors.OpError as again:
            return read_error(source, again)
    return read_error(source, error)


def training_dataset(source, image_size, batch_size, seed=None,
                     shuffle_buffer=SHUFFLE_BUFFER, shard=None,
                     num_shards=None):
    """Endless batches (images [B, size, size, 3], labels [B] int64) with
    Inception train preprocessing, shuffled (file list, then a buffer of
    `shuffle_buffer` examples), decoded in parallel and prefetched.

    With `num_shards` (the workers of a cluster), only shard `shard`: every
    `num_shards`-th image of a folder tree, or of the TFRecord files (of
    the records, in file order, when there are fewer files than shards).
    """
    if source.kind == 'folder':
        files, labels = source.files, source.labels
        if num_shards:
            files = files[shard::num_shards]
            labels = labels[shard::num_shards]
            if not files:
                raise InputError('%s has %d images: too few for %d workers'
                                 % (source.description, len(source.files),
                                    num_shards))
        dataset = tf.data.Dataset.from_tensor_slices(
            (files, np.array(labels, np.int64)))
        # Paths are small: the whole list is reshuffled every epoch.
        dataset = dataset.shuffle(len(files), seed=seed,
                                  reshuffle_each_iteration=True).repeat()
        dataset = dataset.map(
            lambda path, label: (tf.io.read_file(path), label),
            num_parallel_calls=AUTOTUNE)
    elif num_shards and len(source.files) < num_shards:
        dataset = tf.data.TFRecordDataset(source.files).shard(
            num_shards, shard).repeat()
        dataset = dataset.shuffle(shuffle_buffer, seed=seed,
                                  reshuffle_each_iteration=True)
        dataset = dataset.map(parse_record, num_parallel_calls=AUTOTUNE)
    else:
        files = source.files[shard::num_shards] if num_shards \
            else source.files
        dataset = read_records(files, deterministic=seed is not None,
                               shuffle_seed=seed, repeat=True)
        dataset = dataset.shuffle(shuffle_buffer, seed=seed,
                                  reshuffle_each_iteration=True)
        dataset = dataset.map(parse_record, num_parallel_calls=AUTOTUNE)

    def preprocess(encoded, label):
        image = tf.io.decode_image(encoded, channels=3,
                                   expand_animations=False)
        image.set_shape([None, None, 3])
        return preprocessing.preprocess_for_train(
            image, image_size, image_size), label

    dataset = dataset.map(preprocess, num_parallel_calls=AUTOTUNE)
    return dataset.batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)


def evaluation_examples(data, num_classes, class_names=None):
    """[(encoded bytes or path, label)] of evaluation data, all in memory
    (small datasets; `evaluation_dataset` streams)."""
    source = evaluation_source(data, num_classes, class_names)
    if source.kind == 'folder':
        return list(zip(source.files, source.labels))
    with tf.Graph().as_default():
        examples = []
        names = _names(source)
        for encoded, label in iterate(_encoded_stream(source, False)):
            name = next(names)
            if not encoded or label < 0:
                raise InputError('%s is not a slim image record (needs %s '
                                 'and %s)' % (name, ENCODED, LABEL))
            examples.append((encoded, int(label)))
    return examples
