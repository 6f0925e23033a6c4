"""The network registry: every network and every published checkpoint entry
can be looked up, built and identified from it."""

import sys

import pytest
import tensorflow.compat.v1 as tf

from slimnets import analysis
from slimnets import checkpoints
from slimnets import features
from slimnets import nets_factory
from slimnets import registry
from slimnets.errors import InputError


def test_the_factory_is_a_view_of_the_registry():
    assert list(nets_factory.networks_map) == list(registry.NETWORKS)
    for name in registry.NETWORKS:
        assert nets_factory.networks_map[name] is registry.builder(name)
        assert nets_factory.arg_scopes_map[name] is registry.arg_scope_fn(name)
        assert registry.base_network(name) in registry.NETWORKS


def test_derived_tables_follow_the_registry():
    assert set(analysis.PUBLISHED) == set(registry.NETWORKS)
    assert set(analysis.KNOWN_DIFFERENCES) == {'mobilenet_v3_small'}
    assert checkpoints.identification.NETWORK_ROOTS == registry.roots()
    for backbone in features.BACKBONES.values():
        assert registry.FAMILIES[backbone.family].root == backbone.root


def test_unknown_names_are_input_errors():
    with pytest.raises(InputError, match='mobilenet_v9'):
        registry.network('mobilenet_v9')


def test_the_registry_does_not_import_tensorflow():
    import subprocess
    code = ('import sys\nfrom slimnets import registry\n'
            "registry.network('mobilenet_v1')\n"
            "assert 'tensorflow' not in sys.modules\n")
    assert subprocess.run([sys.executable, '-c', code]).returncode == 0


def test_published_names_parse():
    assert registry.parse_published_name('mobilenet_v1_0.25_128') == [(0.25, 128)]
    assert registry.parse_published_name('a/1.0_224/model.ckpt') == [(1.0, 224)]
    assert registry.parse_published_name('model.ckpt') == []


def _configurations():
    """Each distinct (network, kwargs) of the catalogue, with its entries."""
    found = {}
    for item in checkpoints.catalogue():
        key = (item.network, tuple(sorted(item.network_kwargs.items())))
        found.setdefault(key, []).append(item)
    return sorted(found.items())


def test_every_catalogue_entry_fits_its_family():
    for item in checkpoints.catalogue():
        network = registry.network(item.network)
        family = registry.FAMILIES[network.family]
        assert item.family == family.name, item.name
        assert item.network_kwargs['depth_multiplier'] in \
            family.depth_multipliers, item.name
        assert item.input_size in family.image_sizes, item.name


@pytest.mark.parametrize('key,items', _configurations(),
                         ids=lambda value: str(value[0]) if isinstance(
                             value, tuple) else '')
def test_every_published_configuration_builds_and_is_identified(key, items):
    network, kwargs = key
    spec = registry.ModelSpec(network, dict(kwargs), 96, items[0].num_classes)
    with tf.Graph().as_default():
        nets_factory.build_network(spec, tf.placeholder(tf.float32,
                                                        [1, 96, 96, 3]))
        shapes = {v.op.name: v.shape.as_list() for v in tf.global_variables()}
    identity = checkpoints.identify(shapes)
    assert registry.base_network(identity.network) == \
        registry.base_network(network)
    assert identity.depth_multiplier == dict(kwargs)['depth_multiplier']
    assert identity.num_classes == items[0].num_classes
    for item in items:
        if item.weights == 'float':
            assert item.name in identity.catalogue_names, (
                item.name, identity.catalogue_names)
