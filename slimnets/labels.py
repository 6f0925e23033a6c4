"""ImageNet label names in the order of the slim checkpoints (1001 classes).

Index 0 is 'background'; 1..1000 are the ILSVRC-2012 classes in synset
order.  The list ships with slimnets (see data/PROVENANCE.md).
"""

import functools
import importlib.resources

from slimnets.errors import UnknownNameError


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
    raise UnknownNameError('%r is neither an ImageNet synset id nor a label name'
                   % (name_or_synset,))
