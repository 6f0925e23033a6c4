"""Look up a MobileNet by name: `get_network_fn('mobilenet_v2', 1001)`.

The names are research/slim's nets_factory keys for the MobileNet family,
plus `mobilenet_v2_050`, which the reference forgot.
"""

import functools

from slimnets import mobilenet_v1
from slimnets import slim
from slimnets.mobilenet import mobilenet_v2
from slimnets.mobilenet import mobilenet_v3

networks_map = {
    'mobilenet_v1': mobilenet_v1.mobilenet_v1,
    'mobilenet_v1_075': mobilenet_v1.mobilenet_v1_075,
    'mobilenet_v1_050': mobilenet_v1.mobilenet_v1_050,
    'mobilenet_v1_025': mobilenet_v1.mobilenet_v1_025,
    'mobilenet_v2': mobilenet_v2.mobilenet,
    'mobilenet_v2_140': mobilenet_v2.mobilenet_v2_140,
    'mobilenet_v2_050': mobilenet_v2.mobilenet_v2_050,
    'mobilenet_v2_035': mobilenet_v2.mobilenet_v2_035,
    'mobilenet_v3_small': mobilenet_v3.small,
    'mobilenet_v3_large': mobilenet_v3.large,
    'mobilenet_v3_small_minimalistic': mobilenet_v3.small_minimalistic,
    'mobilenet_v3_large_minimalistic': mobilenet_v3.large_minimalistic,
    'mobilenet_edgetpu': mobilenet_v3.edge_tpu,
    'mobilenet_edgetpu_075': mobilenet_v3.edge_tpu_075,
}

_V1_SCOPE = mobilenet_v1.mobilenet_v1_arg_scope
_V2_SCOPE = mobilenet_v2.training_scope
_V3_SCOPE = mobilenet_v3.training_scope

arg_scopes_map = {
    name: (_V1_SCOPE if name.startswith('mobilenet_v1') else
           _V2_SCOPE if name.startswith('mobilenet_v2') else _V3_SCOPE)
    for name in networks_map
}


def get_network_fn(name, num_classes, weight_decay=0.0, is_training=False):
    """Returns `network_fn(images, **kwargs) -> (logits, end_points)`.

    The function enters the network's arg scope with `weight_decay` and
    calls it with `num_classes` and `is_training`; it carries the network's
    `default_image_size`.

    Args:
      name: a key of `networks_map`.
      num_classes: classes of the logits layer (0/None: pooled features).
      weight_decay: L2 weight decay of the arg scope.
      is_training: training mode (batch statistics, dropout).

    Raises:
      ValueError: `name` is not a known network.
    """
    if name not in networks_map:
        raise ValueError('Name of network unknown %s; known networks: %s.'
                         % (name, ', '.join(sorted(networks_map))))
    func = networks_map[name]

    @functools.wraps(func)
    def network_fn(images, **kwargs):
        arg_scope = arg_scopes_map[name](weight_decay=weight_decay)
        with slim.arg_scope(arg_scope):
            return func(images, num_classes=num_classes,
                        is_training=is_training, **kwargs)

    network_fn.default_image_size = getattr(func, 'default_image_size', 224)
    return network_fn
