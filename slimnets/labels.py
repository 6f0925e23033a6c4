"""Class names: ImageNet's, and the `labels.txt` files beside data and
checkpoints.

ImageNet: index 0 is 'background'; 1..1000 are the ILSVRC-2012 classes in
the synset order of the slim checkpoints (1001 classes).  The list ships
with slimnets (see data/PROVENANCE.md).

`labels.txt` is research/slim's `dataset_utils` file: one `label:name`
line per class.  `slimnets data build` and `slimnets train` write it in
that form; readers also take one plain name a line (the label is the line's
index), as `data build --labels` and older `slimnets train` folders give.
This module is its one home; it does not import TensorFlow.
"""

import functools
import importlib.resources
import os

from slimnets import fileio
from slimnets.errors import InputError
from slimnets.errors import UnknownNameError

__all__ = ['LABELS_FILE', 'imagenet_labels', 'imagenet_synsets',
           'label_index', 'read_labels_file', 'class_names',
           'write_labels_file']

LABELS_FILE = 'labels.txt'


@functools.lru_cache(maxsize=None)
def _rows():
    text = importlib.resources.files('slimnets').joinpath(
        'data', 'imagenet_labels.tsv').read_text()
    rows = [line.split('\t') for line in text.splitlines() if line]
    assert [int(r[0]) for r in rows] == list(range(len(rows)))
    return rows


def imagenet_labels():
    """The 1001 names, index 0 'background'."""
    return [row[2] for row in _rows()]


def imagenet_synsets():
    """The 1001 WordNet ids ('n01440764', ...), index 0 '-'."""
    return [row[1] for row in _rows()]


def label_index(name_or_synset, num_classes=1001):
    """The class index of a synset id or a label name (first name matches).

    Raises:
      KeyError: unknown name.
    """
    rows = _rows()
    offset = 1001 - num_classes  # 1000-class models have no background
    for index, synset, names in rows:
        candidates = {synset, names} | {n.strip() for n in names.split(',')}
        if name_or_synset in candidates:
            return int(index) - offset
    raise UnknownNameError('%r is neither an ImageNet synset id nor a label '
                           'name' % (name_or_synset,))


def read_labels_file(path):
    """[(label or None, class name)] of a labels file: one `label:name`, or
    one plain name, a line (UTF-8, with or without a byte-order mark).

    Raises:
      InputError: the file cannot be read or is not UTF-8, is empty, mixes
        the two forms, or repeats a label or a name.
    """
    lines = [line.strip() for line in
             fileio.read_text(path, 'labels file').split('\n')
             if line.strip()]
    if not lines:
        raise InputError('the labels file %s is empty; give one class name, '
                         'or "label:name", a line' % path)
    rows = []
    for line in lines:
        number, colon, name = line.partition(':')
        if colon and number.strip().isdigit():
            rows.append((int(number), name.strip()))
        else:
            rows.append((None, line))
    explicit = [label for label, _ in rows if label is not None]
    if explicit and len(explicit) != len(rows):
        raise InputError('%s mixes "label:name" lines with plain names; use '
                         'one form' % path)
    if len(set(explicit)) != len(explicit) or \
            len({name for _, name in rows}) != len(rows):
        raise InputError('%s repeats a label or a class name' % path)
    return rows


def class_names(folder):
    """Class names by label from the `labels.txt` in `folder` (a label
    missing from a `label:name` file is 'background' at 0, else its
    number), or None when there is no such file or it cannot be read."""
    path = os.path.join(folder, LABELS_FILE)
    if not os.path.isfile(path):
        return None
    try:
        rows = read_labels_file(path)
    except InputError:
        return None
    if rows[0][0] is None:
        return [name for _, name in rows]
    named = dict(rows)
    return [named.get(i, 'background' if i == 0 else str(i))
            for i in range(max(named) + 1)]


def write_labels_file(folder, names):
    """Writes `folder`/labels.txt atomically, one `label:name` line per
    class.

    Args:
      folder: an existing folder.
      names: {label: class name}, or class names in label order from 0.
    """
    if not isinstance(names, dict):
        names = dict(enumerate(names))
    text = ''.join('%d:%s\n' % (label, names[label])
                   for label in sorted(names))
    fileio.write_bytes(os.path.join(folder, LABELS_FILE), text.encode('utf-8'))
