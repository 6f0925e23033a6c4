"""MobileNet v1 against the reference fixtures: structure, inference, training."""

import pytest

from slimnets import mobilenet_v1
from slimnets import slim

import reference


def _classifier(network, **kwargs):
    def build(images):
        with slim.arg_scope(mobilenet_v1.mobilenet_v1_arg_scope(
                is_training=kwargs.get('is_training', True))):
            return network(images, **kwargs)
    return build


def _base(**kwargs):
    def build(images):
        with slim.arg_scope(
                mobilenet_v1.mobilenet_v1_arg_scope(is_training=False)):
            return mobilenet_v1.mobilenet_v1_base(images, **kwargs)
    return build


# Fixture name -> the call in its manifest.
INFERENCE_BUILDS = {
    'v1_025_112_small_input': _classifier(
        mobilenet_v1.mobilenet_v1, num_classes=10, is_training=False,
        depth_multiplier=0.25),
    'v1_025_128': _classifier(mobilenet_v1.mobilenet_v1_025, num_classes=1001,
                              is_training=False),
    'v1_050_160_globalpool': _classifier(
        mobilenet_v1.mobilenet_v1, num_classes=10, is_training=False,
        depth_multiplier=0.5, global_pool=True, spatial_squeeze=False),
    'v1_base_os8_explicit': _base(depth_multiplier=0.25, output_stride=8,
                                  use_explicit_padding=True),
    'v1_base_ssd_conv11': _base(final_endpoint='Conv2d_11_pointwise',
                                min_depth=16, depth_multiplier=0.25,
                                scope='FeatureExtractor/MobilenetV1'),
    'v1_features_only': _classifier(mobilenet_v1.mobilenet_v1, num_classes=0,
                                    is_training=False, depth_multiplier=0.25),
}

STRUCTURE_ONLY_BUILDS = {
    'v1_1.0_224': _classifier(mobilenet_v1.mobilenet_v1, num_classes=1001,
                              is_training=False),
}


def test_every_v1_fixture_has_a_build():
    import os
    if not os.path.isdir(reference.REFERENCE):
        reference.require(reference.REFERENCE)
    names = {n for n in os.listdir(reference.REFERENCE) if n.startswith('v1_')}
    assert names == set(INFERENCE_BUILDS) | set(STRUCTURE_ONLY_BUILDS)


@pytest.mark.parametrize('name', sorted(INFERENCE_BUILDS))
def test_inference_parity(name):
    reference.check_inference_fixture(name, INFERENCE_BUILDS[name])


@pytest.mark.parametrize('name', sorted(STRUCTURE_ONLY_BUILDS))
def test_full_size_structure(name):
    reference.check_structure_fixture(name, STRUCTURE_ONLY_BUILDS[name])


def test_training_parity():
    name = 'train_v1_025_128'
    reference.check_training_fixture(name, _classifier(
        mobilenet_v1.mobilenet_v1, num_classes=10, is_training=True,
        depth_multiplier=0.25, dropout_keep_prob=1.0))
