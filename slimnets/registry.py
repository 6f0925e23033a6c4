"""The network registry: every MobileNet slimnets knows, as data.

One table, one entry per nets_factory name (a network family and variant),
holds what the rest of slimnets needs to know about a network: where its
builder and arg scope live, its family (and so its scope root, published
depth multipliers and resolutions), its default depth multiplier and input
size, and its published cost.  `nets_factory`, `slimnets.features`,
`slimnets.analysis`, checkpoint identification, the Keras converter, the
catalogue check and the command line all read this table; adding a network
is one entry here plus its builder.

Builders are named by 'module:function' and imported on first use, so this
module (and `slimnets --help`, which reads it) does not import TensorFlow.
It imports nothing from slimnets above `slimnets.errors`.
"""

import collections
import importlib
import re

from slimnets.errors import InputError

__all__ = [
    'Family', 'Network', 'FAMILIES', 'NETWORKS', 'DEFAULT_MODEL',
    'ModelSpec', 'network', 'family', 'builder', 'arg_scope_fn', 'roots',
    'depth_candidates', 'base_network', 'parse_published_name',
]

Family = collections.namedtuple('Family', [
    'name',               # 'v1', 'v2', 'v3', 'edgetpu'
    'root',               # variable scope root, e.g. 'MobilenetV1'
    'arg_scope',          # 'module:function' of the family's arg scope
    'depth_multipliers',  # published depth multipliers, ascending
    'image_sizes',        # published input resolutions, ascending
])

Network = collections.namedtuple('Network', [
    'name',               # nets_factory key, e.g. 'mobilenet_v1_025'
    'family',             # key of FAMILIES
    'builder',            # 'module:function' building the classifier
    'base',               # the network this one is a depth preset of
    'depth_multiplier',   # the builder's default depth multiplier
    'default_image_size',
    'params_millions',    # published, at 224 and 1001 classes (or None)
    'macs_millions',
    'known_difference',   # why the published figure may not match, or None
])

_V1 = 'slimnets.mobilenet_v1:'
_V2 = 'slimnets.mobilenet.mobilenet_v2:'
_V3 = 'slimnets.mobilenet.mobilenet_v3:'

FAMILIES = collections.OrderedDict((f.name, f) for f in (
    Family('v1', 'MobilenetV1', _V1 + 'mobilenet_v1_arg_scope',
           (0.25, 0.5, 0.75, 1.0), (128, 160, 192, 224)),
    Family('v2', 'MobilenetV2', _V2 + 'training_scope',
           (0.35, 0.5, 0.75, 1.0, 1.3, 1.4), (96, 128, 160, 192, 224)),
    Family('v3', 'MobilenetV3', _V3 + 'training_scope', (0.75, 1.0), (224,)),
    Family('edgetpu', 'MobilenetEdgeTPU', _V3 + 'training_scope',
           (0.75, 1.0), (224,)),
))

_V3_SMALL_FIGURES = ('the README lists 2.9M parameters and 66M MACs; the '
                     'released v3-small graph (and Keras MobileNetV3Small) '
                     'has 2.54M and 57M')

NETWORKS = collections.OrderedDict((n.name, n) for n in (
    Network('mobilenet_v1', 'v1', _V1 + 'mobilenet_v1', 'mobilenet_v1', 1.0,
            224, 4.24, 569, None),
    Network('mobilenet_v1_075', 'v1', _V1 + 'mobilenet_v1_075',
            'mobilenet_v1', 0.75, 224, 2.59, 317, None),
    Network('mobilenet_v1_050', 'v1', _V1 + 'mobilenet_v1_050',
            'mobilenet_v1', 0.5, 224, 1.34, 150, None),
    Network('mobilenet_v1_025', 'v1', _V1 + 'mobilenet_v1_025',
            'mobilenet_v1', 0.25, 224, 0.47, 41, None),
    Network('mobilenet_v2', 'v2', _V2 + 'mobilenet', 'mobilenet_v2', 1.0,
            224, 3.47, 300, None),
    Network('mobilenet_v2_140', 'v2', _V2 + 'mobilenet_v2_140',
            'mobilenet_v2', 1.4, 224, 6.06, 582, None),
    Network('mobilenet_v2_050', 'v2', _V2 + 'mobilenet_v2_050',
            'mobilenet_v2', 0.5, 224, 1.95, 97, None),
    Network('mobilenet_v2_035', 'v2', _V2 + 'mobilenet_v2_035',
            'mobilenet_v2', 0.35, 224, 1.66, 59, None),
    Network('mobilenet_v3_small', 'v3', _V3 + 'small', 'mobilenet_v3_small',
            1.0, 224, 2.9, 66, _V3_SMALL_FIGURES),
    Network('mobilenet_v3_large', 'v3', _V3 + 'large', 'mobilenet_v3_large',
            1.0, 224, 5.4, 217, None),
    Network('mobilenet_v3_small_minimalistic', 'v3',
            _V3 + 'small_minimalistic', 'mobilenet_v3_small_minimalistic',
            1.0, 224, 2.0, 65, None),
    Network('mobilenet_v3_large_minimalistic', 'v3',
            _V3 + 'large_minimalistic', 'mobilenet_v3_large_minimalistic',
            1.0, 224, 3.9, 209, None),
    Network('mobilenet_edgetpu', 'edgetpu', _V3 + 'edge_tpu',
            'mobilenet_edgetpu', 1.0, 224, 4.0, 990, None),
    Network('mobilenet_edgetpu_075', 'edgetpu', _V3 + 'edge_tpu_075',
            'mobilenet_edgetpu', 0.75, 224, 2.9, 624, None),
))

# The model used when neither a checkpoint nor a model is named (`slimnets
# classify IMAGE`, `Classifier()`): the copy of Google's quantized v2 1.0_224
# that ships inside the package (`slimnets.checkpoints.embedded`), so it
# needs no network.  The name is accepted wherever a catalogue name is.
DEFAULT_MODEL = 'embedded'

ModelSpec = collections.namedtuple('ModelSpec', [
    'network', 'kwargs', 'image_size', 'num_classes'])

# Published-style names ('mobilenet_v1_0.25_128', '.../1.0_224/...'): the
# depth multiplier and the input size.
_PUBLISHED_NAME = re.compile(r'(?:^|[_/-])(\d\.\d+)_(\d{2,3})(?=$|[_/.-])')


def network(name):
    """The registry entry of nets_factory name `name`.

    Raises:
      InputError: unknown name; the message lists the known ones.
    """
    if name not in NETWORKS:
        raise InputError('unknown network %r; known networks: %s' % (
            name, ', '.join(NETWORKS)))
    return NETWORKS[name]


def family(name):
    """The Family of a family name ('v1') or of a network name."""
    return FAMILIES[name] if name in FAMILIES else FAMILIES[
        network(name).family]


def _resolve(reference):
    module, _, attribute = reference.partition(':')
    return getattr(importlib.import_module(module), attribute)


def builder(name):
    """The network function of `name` (imports its module)."""
    return _resolve(network(name).builder)


def arg_scope_fn(name):
    """The arg-scope function of network `name` (or of a family name)."""
    return _resolve(family(name).arg_scope)


def roots():
    """Every family's scope root, e.g. ('MobilenetV1', ...)."""
    return tuple(f.root for f in FAMILIES.values())


def depth_candidates():
    """Depth multipliers to try when identifying a checkpoint: every
    published one, then the unusual ones tests and users build."""
    published = sorted({d for f in FAMILIES.values()
                        for d in f.depth_multipliers}, reverse=True)
    return tuple(published) + (2.0, 0.1, 0.01)


def base_network(name):
    """The network `name` is a depth preset of ('mobilenet_v1_025' ->
    'mobilenet_v1'); unknown names are returned unchanged."""
    return NETWORKS[name].base if name in NETWORKS else name


def parse_published_name(text):
    """[(depth multiplier, input size)] that a published-style name or path
    names, e.g. 'mobilenet_v1_0.25_128' -> [(0.25, 128)]."""
    return [(float(depth), int(size))
            for depth, size in _PUBLISHED_NAME.findall(text or '')]
