"""Top-1 / top-5 accuracy of a checkpoint on labelled images."""

import numpy as np
from tqdm import tqdm

from slimnets.classifier import Classifier
from slimnets.datasets import evaluation_examples
from slimnets.errors import InputError
from slimnets.images import MAX_PIXELS
from slimnets.images import read_image_file


def evaluate(checkpoint, data, model=None, batch_size=32, max_images=None,
             progress=True, moving_average='auto', cache_dir=None,
             image_size=None, max_pixels=MAX_PIXELS, runtime='auto'):
    """Top-1 and top-5 accuracy of a checkpoint on labelled images.

    Returns:
      A dict: network, checkpoint, images, top1, top5, the spec, and the
      runtime that ran it (`runtime`: see `Classifier`).
    """
    if batch_size < 1 or (max_images is not None and max_images < 1):
        raise InputError('batch_size and max_images must be at least 1 '
                         '(got %s and %s)' % (batch_size, max_images))
    classifier = Classifier(checkpoint, model, image_size=image_size,
                            moving_average=moving_average,
                            cache_dir=cache_dir, progress=progress,
                            max_pixels=max_pixels, runtime=runtime)
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
                'images': count, 'top1': top1 / count, 'top5': top5 / count,
                'runtime': classifier.runtime.describe()}
    finally:
        classifier.close()
