"""slimnets: the TF-Slim MobileNet family (v1, v2, v3, EdgeTPU) on current TensorFlow.

Importing this package changes nothing in TensorFlow or tf_slim.  Networks
live in `slimnets.mobilenet_v1`, `slimnets.mobilenet.*` and
`slimnets.nets_factory`; the slim layer library in `slimnets.slim`.
"""

__version__ = '0.1.0'
