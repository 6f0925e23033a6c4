"""Classification with a checkpoint: the public entry points in one place.

`Classifier(checkpoint=..., model=...)` builds the network with Inception
eval preprocessing in one graph, restores the checkpoint (moving-average
shadows when present) and classifies encoded images (JPEG, PNG, BMP, GIF);
with nothing named it uses `DEFAULT_MODEL`, fetched on first use.
`evaluate(...)` computes top-1/top-5 over a folder of class folders or
slim-format TFRecords.

The work is done in one module per job, re-exported here:

    slimnets.inference.models      which network, size and classes a checkpoint needs
    slimnets.images      image files, decoding and preprocessing
    slimnets.inference.classifier  the Classifier
    slimnets.datasets    labelled images: class folders, TFRecords
    slimnets.inference.evaluation  top-1 / top-5
"""

from slimnets.datasets import evaluation_examples
from slimnets.errors import InputError
from slimnets.images import IMAGE_EXTENSIONS
from slimnets.images import read_image_file
from slimnets.inference.classifier import Classifier
from slimnets.inference.evaluation import evaluate
from slimnets.inference.models import DEFAULT_MODEL
from slimnets.inference.models import LABELS_FILE
from slimnets.inference.models import MODEL_FILE
from slimnets.inference.models import ModelSpec
from slimnets.inference.models import base_network
from slimnets.inference.models import build_network
from slimnets.inference.models import class_names_for
from slimnets.inference.models import model_spec
from slimnets.inference.models import read_model_file
from slimnets.inference.models import size_from_name
from slimnets.inference.models import weights_for
from slimnets.inference.models import write_model_file
from slimnets.preprocessing import decode_and_preprocess

__all__ = [
    'Classifier', 'DEFAULT_MODEL', 'IMAGE_EXTENSIONS', 'InputError',
    'LABELS_FILE', 'MODEL_FILE', 'ModelSpec', 'base_network',
    'build_network', 'class_names_for', 'decode_and_preprocess', 'evaluate',
    'evaluation_examples', 'model_spec', 'read_image_file', 'read_model_file',
    'size_from_name', 'weights_for', 'write_model_file',
]
