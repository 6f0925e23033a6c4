"""Classification with a checkpoint: the public entry points in one place.

`Classifier(checkpoint=..., model=...)` builds the network with Inception
eval preprocessing in one graph, restores the checkpoint (moving-average
shadows when present) and classifies encoded images (JPEG, PNG, BMP, GIF);
with nothing named it uses `DEFAULT_MODEL`, fetched on first use.
`evaluate(...)` computes top-1/top-5 over a folder of class folders or
slim-format TFRecords.

The work is done in one module per job, re-exported here:

    slimnets.models      which network, size and classes a checkpoint needs
    slimnets.images      image files, decoding and preprocessing
    slimnets.classifier  the Classifier
    slimnets.datasets    labelled images: class folders, TFRecords
    slimnets.evaluation  top-1 / top-5
"""

from slimnets.classifier import Classifier
from slimnets.datasets import evaluation_examples
from slimnets.errors import InputError
from slimnets.evaluation import evaluate
from slimnets.images import IMAGE_EXTENSIONS
from slimnets.images import read_image_file
from slimnets.models import DEFAULT_MODEL
from slimnets.models import LABELS_FILE
from slimnets.models import MODEL_FILE
from slimnets.models import ModelSpec
from slimnets.models import base_network
from slimnets.models import build_network
from slimnets.models import class_names_for
from slimnets.models import model_spec
from slimnets.models import read_model_file
from slimnets.models import size_from_name
from slimnets.models import weights_for
from slimnets.models import write_model_file
from slimnets.preprocessing import decode_and_preprocess

__all__ = [
    'Classifier', 'DEFAULT_MODEL', 'IMAGE_EXTENSIONS', 'InputError',
    'LABELS_FILE', 'MODEL_FILE', 'ModelSpec', 'base_network',
    'build_network', 'class_names_for', 'decode_and_preprocess', 'evaluate',
    'evaluation_examples', 'model_spec', 'read_image_file', 'read_model_file',
    'size_from_name', 'weights_for', 'write_model_file',
]
