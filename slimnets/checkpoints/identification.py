"""Which MobileNet a set of variables belongs to, from names and shapes alone.

Works on any `{variable name: shape}` map, a checkpoint's or a graph's, so
a mismatch between the two can be explained ("the checkpoint is v2 at depth
multiplier 1.4, the graph at 1.0").

The network scope is found by its root name (`MobilenetV1`, `MobilenetV2`,
`MobilenetV3`, `MobilenetEdgeTPU`), wherever it sits (`FeatureExtractor/...`).
The depth multiplier, the head and the variant are found by rebuilding the
expected channel count of every convolution from the conv defs, for each
candidate configuration, and keeping the one that explains them all.
"""

import collections

from slimnets import mobilenet_v1
from slimnets import primitives
from slimnets import registry
from slimnets.checkpoints.published import catalogue
from slimnets.mobilenet import conv_blocks
from slimnets.mobilenet import mobilenet_v2
from slimnets.mobilenet import mobilenet_v3

__all__ = [
    'NETWORK_ROOTS', 'SHADOW_SUFFIX', 'Identity', 'network_scope',
    'identify', 'describe',
]

NETWORK_ROOTS = registry.roots()
SHADOW_SUFFIX = '/ExponentialMovingAverage'
_QUANTIZATION_MARKERS = ('weights_quant', 'act_quant', '/min', '/max')
_DEPTH_CANDIDATES = registry.depth_candidates()

Identity = collections.namedtuple('Identity', [
    'family',            # 'v1', 'v2', 'v3', 'edgetpu' or None
    'network',           # nets_factory name, e.g. 'mobilenet_v3_small'
    'variant',           # conv-def name, e.g. 'V3_SMALL_DETECTION'
    'scope',             # e.g. 'FeatureExtractor/MobilenetV1'
    'depth_multiplier',  # float or None
    'finegrain',         # last layer kept unscaled (v2/v3 heads)
    'head_width',        # channels of the last convolution
    'num_classes',       # classes of the logits, None without logits
    'normalizer',        # 'batch_norm', 'group_norm' or None
    'moving_average_shadows',
    'quantized',         # QAT min/max variables present
    'catalogue_names',   # matching catalogue entries (all input sizes)
])


def _strip_shadow(name):
    return name[:-len(SHADOW_SUFFIX)] if name.endswith(SHADOW_SUFFIX) else name


def network_scope(names):
    """The most common '<...>/<root>' scope among `names`, or None."""
    counts = collections.Counter()
    for name in names:
        parts = _strip_shadow(name).split('/')
        for index, part in enumerate(parts[:-1]):
            if part in NETWORK_ROOTS:
                counts['/'.join(parts[:index + 1])] += 1
                break
    return counts.most_common(1)[0][0] if counts else None


def _local_shapes(shapes, scope):
    """{name relative to scope: shape}, shadows left out."""
    prefix = scope + '/'
    return {name[len(prefix):]: shape for name, shape in shapes.items()
            if name.startswith(prefix) and not name.endswith(SHADOW_SUFFIX)}


def _out_channels(local, layer):
    for suffix in ('/weights', '/pointwise_weights'):
        shape = local.get(layer + suffix)
        if shape:
            return shape[-1]
    return None


def _v1_expected_layers(depth_multiplier, min_depth):
    layers = {}
    for index, conv_def in enumerate(mobilenet_v1.MOBILENETV1_CONV_DEFS):
        name = 'Conv2d_0' if index == 0 else 'Conv2d_%d_pointwise' % index
        layers[name] = max(int(conv_def.depth * depth_multiplier), min_depth)
    return layers


def _spec_layer_names(spec):
    """Maps each spec op with `num_outputs` to the scope slim gives it."""
    counters = collections.Counter()
    names = []
    for opdef in spec:
        base = 'expanded_conv' if opdef.op is conv_blocks.expanded_conv else (
            'Conv' if 'num_outputs' in opdef.params else None)
        if base is None:
            names.append(None)
            continue
        count = counters[base]
        counters[base] += 1
        scope = base if count == 0 else '%s_%d' % (base, count)
        names.append(scope + '/project' if base == 'expanded_conv' else scope)
    return names


def _spec_expected_layers(spec, depth_multiplier, finegrain):
    layers = {}
    names = _spec_layer_names(spec)
    for position, (opdef, name) in enumerate(zip(spec, names)):
        if name is None:
            continue
        outputs = opdef.params['num_outputs']
        if finegrain and position == len(spec) - 1:
            layers[name] = int(outputs) if outputs >= 1 else outputs
        else:
            layers[name] = primitives.make_divisible(
                outputs * depth_multiplier, 8, 8)
    return layers


def _matches(local, expected):
    """Whether every expected layer present in `local` has its width; and
    how many were compared."""
    compared = 0
    for layer, channels in expected.items():
        found = _out_channels(local, layer)
        if found is None:
            continue
        if found != channels:
            return False, compared
        compared += 1
    return compared > 0, compared


def _v1_configuration(local):
    for depth in _DEPTH_CANDIDATES:
        for min_depth in (8, 16, 1, 32):
            ok, _ = _matches(local, _v1_expected_layers(depth, min_depth))
            if ok:
                return 'MOBILENETV1_CONV_DEFS', depth, False
    return None, _ratio(local, 'Conv2d_13_pointwise', 1024), False


_V3_VARIANTS = ('V3_LARGE', 'V3_LARGE_DETECTION', 'V3_SMALL',
                'V3_SMALL_DETECTION', 'V3_LARGE_MINIMALISTIC',
                'V3_SMALL_MINIMALISTIC')


def _spec_configuration(local, variants, module):
    best = None
    for variant in variants:
        spec = getattr(module, variant)['spec']
        for depth in _DEPTH_CANDIDATES:
            for finegrain in (False, True):
                ok, compared = _matches(
                    local, _spec_expected_layers(spec, depth, finegrain))
                if ok and (best is None or compared > best[3]):
                    best = (variant, depth, finegrain, compared)
    if best is None:
        return None, None, False
    return best[:3]


def _ratio(local, layer, base):
    channels = _out_channels(local, layer)
    return round(channels / float(base), 3) if channels else None


def _v3_variants_for(local):
    """Large or small (block count), with or without squeeze-excite."""
    blocks = [int(n.split('/')[0].split('_')[-1]) for n in local
              if n.startswith('expanded_conv_')]
    largest = max(blocks) if blocks else 0
    minimalistic = not any('squeeze_excite' in name for name in local)
    size = 'LARGE' if largest > 10 else 'SMALL'
    if minimalistic:
        return ('V3_%s_MINIMALISTIC' % size,)
    return ('V3_%s' % size, 'V3_%s_DETECTION' % size)


_V3_NETWORKS = {
    'V3_LARGE': 'mobilenet_v3_large', 'V3_LARGE_DETECTION': 'mobilenet_v3_large',
    'V3_SMALL': 'mobilenet_v3_small', 'V3_SMALL_DETECTION': 'mobilenet_v3_small',
    'V3_LARGE_MINIMALISTIC': 'mobilenet_v3_large_minimalistic',
    'V3_SMALL_MINIMALISTIC': 'mobilenet_v3_small_minimalistic',
}


def _head_width(local, family):
    if family == 'v1':
        return _out_channels(local, 'Conv2d_13_pointwise')
    layers = [n[:-len('/weights')] for n in local
              if n.endswith('/weights') and n.split('/')[0].startswith('Conv')
              and n.count('/') == 1]
    widths = {n: _out_channels(local, n) for n in layers}
    if not widths:
        return None
    last = max(widths, key=lambda n: int(n.split('_')[1]) if '_' in n else 0)
    return widths[last]


def _catalogue_names(network, depth, quantized):
    if network is None or depth is None:
        return []
    names = []
    for item in catalogue():
        if item.network in (network, network + '_075') and abs(
                item.network_kwargs.get('depth_multiplier', 1.0) - depth) < 1e-6:
            if quantized == (item.weights != 'float') or item.family == 'edgetpu':
                names.append(item.name)
    return names


def identify(shapes):
    """Identifies the MobileNet whose variables are `shapes`.

    Args:
      shapes: {variable name: shape list}, e.g. a checkpoint's
        `get_variable_to_shape_map()` or a graph's variables.

    Returns:
      An `Identity`; `family` is None when no MobileNet scope is found.
    """
    names = list(shapes)
    shadows = any(name.endswith(SHADOW_SUFFIX) for name in names)
    quantized = any(marker in name for name in names
                    for marker in _QUANTIZATION_MARKERS)
    scope = network_scope(names)
    if scope is None:
        return Identity(None, None, None, None, None, False, None, None, None,
                        shadows, quantized, [])
    family = {f.root: f.name for f in registry.FAMILIES.values()}[
        scope.split('/')[-1]]
    local = _local_shapes(shapes, scope)
    if family == 'v1':
        network = 'mobilenet_v1'
        variant, depth, finegrain = _v1_configuration(local)
    elif family == 'v2':
        network = 'mobilenet_v2'
        variant, depth, finegrain = _spec_configuration(
            local, ('V2_DEF',), mobilenet_v2)
    elif family == 'edgetpu':
        variant, depth, finegrain = _spec_configuration(
            local, ('V3_EDGETPU',), mobilenet_v3)
        network = 'mobilenet_edgetpu_075' if (
            depth == 0.75 and finegrain) else 'mobilenet_edgetpu'
    else:
        variant, depth, finegrain = _spec_configuration(
            local, _v3_variants_for(local), mobilenet_v3)
        network = _V3_NETWORKS.get(variant)
    logits = local.get('Logits/Conv2d_1c_1x1/biases')
    normalizer = ('group_norm' if any('/GroupNorm/' in n for n in local) else
                  'batch_norm' if any('/BatchNorm/' in n for n in local) else
                  None)
    return Identity(family, network, variant, scope, depth, finegrain,
                    _head_width(local, family),
                    logits[0] if logits else None, normalizer, shadows,
                    quantized, _catalogue_names(network, depth, quantized))


def describe(identity):
    """A one-line description of an `Identity`."""
    if identity.family is None:
        return 'not a MobileNet (no MobilenetV1/V2/V3/EdgeTPU scope)'
    parts = ['%s (%s)' % (identity.network or identity.family,
                          identity.variant or 'unknown layout'),
             'scope %s' % identity.scope,
             'depth multiplier %s' % identity.depth_multiplier]
    if identity.finegrain:
        parts.append('finegrain head')
    parts.append('head width %s' % identity.head_width)
    parts.append('%s classes' % identity.num_classes
                 if identity.num_classes else 'no logits')
    if identity.normalizer:
        parts.append(identity.normalizer)
    parts.append('moving-average shadows' if identity.moving_average_shadows
                 else 'no moving-average shadows')
    if identity.quantized:
        parts.append('quantization-aware (min/max) variables')
    return ', '.join(parts)
