"""Look up a MobileNet by name: `get_network_fn('mobilenet_v2', 1001)`.

The names are research/slim's nets_factory keys for the MobileNet family,
plus `mobilenet_v2_050`, which the reference forgot.  Both maps are views of
`slimnets.registry`, where each network is one entry.
"""

import functools

from slimnets import registry
from slimnets import slim
from slimnets.errors import InputError

__all__ = [
    'networks_map', 'arg_scopes_map', 'get_network_fn', 'build_network',
]

networks_map = {name: registry.builder(name) for name in registry.NETWORKS}

arg_scopes_map = {name: registry.arg_scope_fn(name)
                  for name in registry.NETWORKS}


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
        raise InputError('Name of network unknown %s; known networks: %s.'
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


def build_network(spec, images, is_training=False):
    """Builds a `registry.ModelSpec` on `images` under its arg scope.

    Args:
      spec: ModelSpec(network, kwargs, image_size, num_classes).
      images: [N, size, size, 3] float tensor in [-1, 1].

    Returns:
      (logits [N, num_classes], end_points).
    """
    network_fn = get_network_fn(spec.network, spec.num_classes,
                                is_training=is_training)
    return network_fn(images, **spec.kwargs)
