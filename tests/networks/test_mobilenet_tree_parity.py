"""MobileNet v2, v3 and EdgeTPU against the reference fixtures."""

import os

import pytest

from slimnets import slim
from slimnets.mobilenet import mobilenet_v2
from slimnets.mobilenet import mobilenet_v3

import reference


def _under(scope_fn, network, **kwargs):
    def build(images):
        with slim.arg_scope(scope_fn(is_training=False)):
            return network(images, **kwargs)
    return build


def _v2(network, **kwargs):
    return _under(mobilenet_v2.training_scope, network, **kwargs)


def _v3(network, **kwargs):
    return _under(mobilenet_v3.training_scope, network, **kwargs)


# Fixture name -> the call in its manifest.
INFERENCE_BUILDS = {
    'v2_035_96': _v2(mobilenet_v2.mobilenet_v2_035),
    'v2_050_128_c10': _v2(mobilenet_v2.mobilenet_v2_050, num_classes=10),
    'v2_base_os16_explicit': _v2(mobilenet_v2.mobilenet_base,
                                 depth_multiplier=0.5, output_stride=16,
                                 use_explicit_padding=True),
    'v2_base_os8_finegrain': _v2(mobilenet_v2.mobilenet_base,
                                 depth_multiplier=0.35, output_stride=8,
                                 finegrain_classification_mode=True),
    'v2_groupnorm_base': _v2(mobilenet_v2.mobilenet_base_group_norm,
                             depth_multiplier=0.35),
    'v3_edgetpu_050_96': _v3(mobilenet_v3.edge_tpu, depth_multiplier=0.5,
                             num_classes=10),
    'v3_large_035_96_c10': _v3(mobilenet_v3.large, depth_multiplier=0.35,
                               num_classes=10),
    'v3_large_detection_base': _v3(mobilenet_v3.mobilenet_base,
                                   conv_defs=mobilenet_v3.V3_LARGE_DETECTION,
                                   depth_multiplier=0.35),
    'v3_large_min_050_96': _v3(mobilenet_v3.large_minimalistic,
                               depth_multiplier=0.5, num_classes=10),
    'v3_small_050_96_c10': _v3(mobilenet_v3.small, depth_multiplier=0.5,
                               num_classes=10),
    'v3_small_min_050_96': _v3(mobilenet_v3.small_minimalistic,
                               depth_multiplier=0.5, num_classes=10),
}

STRUCTURE_ONLY_BUILDS = {
    'v2_1.0_224': _v2(mobilenet_v2.mobilenet),
    'v2_140_224': _v2(mobilenet_v2.mobilenet_v2_140),
    'v3_large_224': _v3(mobilenet_v3.large),
    'v3_small_224': _v3(mobilenet_v3.small),
}


def _training(scope_fn, network, **kwargs):
    def build(images):
        with slim.arg_scope(scope_fn(is_training=True)):
            return network(images, **kwargs)
    return build


TRAINING_BUILDS = {
    'train_v2_035_96': _training(mobilenet_v2.training_scope,
                                 mobilenet_v2.mobilenet, num_classes=10,
                                 depth_multiplier=0.35),
    'train_v3_small_050_96': _training(mobilenet_v3.training_scope,
                                       mobilenet_v3.small, num_classes=10,
                                       depth_multiplier=0.5),
}


def test_every_tree_fixture_has_a_build():
    reference.require(reference.REFERENCE)
    names = {n for n in os.listdir(reference.REFERENCE)
             if n.startswith(('v2_', 'v3_', 'train_v2', 'train_v3'))}
    assert names == (set(INFERENCE_BUILDS) | set(STRUCTURE_ONLY_BUILDS) |
                     set(TRAINING_BUILDS))


@pytest.mark.parametrize('name', sorted(INFERENCE_BUILDS))
def test_inference_parity(name):
    reference.check_inference_fixture(name, INFERENCE_BUILDS[name])


@pytest.mark.parametrize('name', sorted(STRUCTURE_ONLY_BUILDS))
def test_full_size_structure(name):
    reference.check_structure_fixture(name, STRUCTURE_ONLY_BUILDS[name])


@pytest.mark.parametrize('name', sorted(TRAINING_BUILDS))
def test_training_parity(name):
    reference.check_training_fixture(name, TRAINING_BUILDS[name])
