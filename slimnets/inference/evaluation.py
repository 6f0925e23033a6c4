"""Top-1 / top-5 accuracy of a checkpoint on labelled images.

The images stream through `slimnets.datasets` (read, decoded and
preprocessed in parallel by tf.data, in a stable order) into the
`Classifier`'s runtime; memory stays bounded whatever the dataset size.
`evaluate(..., shard=K, num_shards=N)` evaluates a disjoint, stable slice
and `merge(results)` combines the slices into exactly the single-process
counts.
"""

import os

import numpy as np
import tensorflow.compat.v1 as tf
from tqdm import tqdm

from slimnets import datasets
from slimnets.errors import InputError
from slimnets.images import MAX_PIXELS
from slimnets.inference.classifier import Classifier

__all__ = ['evaluate', 'merge']

# What must agree between the slices of one evaluation.
_SAME = ('network', 'network_kwargs', 'image_size', 'checkpoint',
         'moving_average', 'num_shards', 'data', 'max_images')


def evaluate(checkpoint, data, model=None, batch_size=32, max_images=None,
             progress=True, moving_average='auto', cache_dir=None,
             image_size=None, max_pixels=MAX_PIXELS, shard=None,
             num_shards=None, split=None, runtime='auto',
             force_image_size=False):
    """Top-1 and top-5 accuracy of a checkpoint on labelled images.

    Args:
      data: class folders, TFRecords (file, folder of shards, glob) or a
        research/slim dataset_dir (with `split`).
      max_images: only the first this many of the stream.
      shard, num_shards: evaluate only slice `shard` (0-based) of
        `num_shards`: every `num_shards`-th image from the `shard`-th.
      split: research/slim split name in a dataset_dir.
      runtime: which runtime runs the network (see `Classifier`).
      force_image_size: see `Classifier`.

    Returns:
      A dict: network, network_kwargs, image_size, checkpoint,
      moving_average, images, top1, top5 (rates), top1_count, top5_count,
      shard, num_shards, data, max_images, and the runtime that ran it.
    """
    if not isinstance(data, (str, os.PathLike)) or not str(data):
        raise InputError('data must be a path (class folders, TFRecords or a '
                         'dataset_dir), got %r' % (data,))
    for name, value in (('batch_size', batch_size), ('max_images', max_images),
                        ('shard', shard), ('num_shards', num_shards)):
        if value is not None and (isinstance(value, bool) or not isinstance(
                value, (int, np.integer))):
            raise InputError('%s must be a whole number, got %r' % (
                name, value))
    if batch_size < 1 or (max_images is not None and max_images < 1):
        raise InputError('batch_size and max_images must be at least 1 '
                         '(got %s and %s)' % (batch_size, max_images))
    if (shard is None) != (num_shards is None) or (
            num_shards is not None and not 0 <= shard < num_shards):
        raise InputError('give shard K and num_shards N together, with '
                         '0 <= K < N (got %s and %s)' % (shard, num_shards))
    classifier = Classifier(checkpoint, model, image_size=image_size,
                            moving_average=moving_average,
                            cache_dir=cache_dir, progress=progress,
                            max_pixels=max_pixels, runtime=runtime,
                            force_image_size=force_image_size)
    try:
        source = datasets.evaluation_source(
            data, classifier.spec.num_classes, classifier.class_names, split)
        total = datasets.shard_size(source.count(), shard, num_shards,
                                    max_images)
        if not total and not num_shards:
            raise InputError('no images found in %s' % data)
        top1 = top5 = count = 0
        with tf.Graph().as_default(), tqdm(
                total=total, unit='img', disable=not progress,
                leave=False) as bar:
            batches = datasets.evaluation_dataset(
                source, classifier.spec.image_size, batch_size, max_images,
                shard, num_shards, max_pixels)
            try:
                for images, labels in datasets.iterate(batches):
                    probabilities = classifier.runtime.run(images)
                    ranked = np.argsort(-probabilities, axis=1)
                    top1 += int(np.sum(ranked[:, 0] == labels))
                    top5 += int(np.sum(np.any(ranked[:, :5] == labels[:, None],
                                              axis=1)))
                    count += len(labels)
                    bar.update(len(labels))
            except tf.errors.OpError as error:
                raise datasets.explain_failure(
                    source, error, classifier.predict, batch_size, shard,
                    num_shards, max_images) from None
        return {'model': classifier.model_name,
                'network': classifier.spec.network,
                'network_kwargs': classifier.spec.kwargs,
                'image_size': classifier.spec.image_size,
                'checkpoint': classifier.checkpoint,
                'moving_average': classifier.restore_plan.moving_average,
                'images': count, 'top1_count': top1, 'top5_count': top5,
                'top1': top1 / count if count else 0.0,
                'top5': top5 / count if count else 0.0,
                'shard': shard, 'num_shards': num_shards, 'data': data,
                'max_images': max_images,
                'runtime': classifier.runtime.describe()}
    finally:
        classifier.close()


def merge(results):
    """One result from the slices of a sharded evaluation (dicts as
    `evaluate` returns them, one per shard 0..N-1): the counts summed and
    the rates recomputed, equal to a single-process evaluation.

    Raises:
      InputError: the results are not the N distinct slices of one
        evaluation.
    """
    if isinstance(results, dict):
        raise InputError('merge takes a list of results (one per shard), not '
                         'one result')
    results = list(results)
    if not results:
        raise InputError('nothing to merge')
    first = results[0]
    for result in results:
        if not isinstance(result, dict):
            raise InputError('a result to merge must be a dict as evaluate '
                             'returns it, not %s' % type(result).__name__)
        missing = [k for k in ('images', 'top1_count', 'top5_count',
                               'shard', 'num_shards') if k not in result]
        if missing or result['num_shards'] is None:
            raise InputError('a result to merge is not from a sharded '
                             'evaluation (no %s); run slimnets eval --shard '
                             'K --num-shards N --json OUT' % ', '.join(
                                 missing or ['num_shards']))
        differing = [k for k in _SAME if result.get(k) != first.get(k)]
        if differing:
            raise InputError('the results are of different evaluations (%s '
                             'differ)' % ', '.join(differing))
    shards = sorted(r['shard'] for r in results)
    expected = list(range(first['num_shards']))
    if shards != expected:
        repeated = sorted({s for s in shards if shards.count(s) > 1})
        absent = sorted(set(expected) - set(shards))
        raise InputError('merging needs each of the %d shards once (%s)' % (
            first['num_shards'], '; '.join(
                part for part in (
                    'repeated: %s' % repeated if repeated else '',
                    'missing: %s' % absent if absent else '') if part)))
    merged = {k: first[k] for k in _SAME if k != 'num_shards'}
    count = sum(r['images'] for r in results)
    top1 = sum(r['top1_count'] for r in results)
    top5 = sum(r['top5_count'] for r in results)
    merged.update({'images': count, 'top1_count': top1, 'top5_count': top5,
                   'top1': top1 / count if count else 0.0,
                   'top5': top5 / count if count else 0.0,
                   'shard': None, 'num_shards': None,
                   'merged_shards': first['num_shards'],
                   'runtime': ', '.join(sorted({str(r.get('runtime'))
                                                for r in results}))})
    return merged
