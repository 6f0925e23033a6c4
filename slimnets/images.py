"""Image files: finding, reading and size-checking them before decoding.

Decoding and preprocessing happen in the graph
(`slimnets.preprocessing.decode_and_preprocess`).  This module does not
import TensorFlow, so the command line can use its limits.
"""

import os
import struct

from slimnets.errors import InputError

__all__ = [
    'IMAGE_EXTENSIONS', 'MAX_PIXELS', 'MAX_STDIN_BYTES', 'image_format',
    'header_size', 'header_channels', 'check_image', 'read_image_file',
]

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif')

# The largest image decoded by default (pixels): a 20000x20000 PNG of a few
# MB would otherwise take gigabytes to decode.  --max-pixels changes it.
MAX_PIXELS = 50_000_000

# The most bytes `slimnets classify -` reads from stdin (one image file).
MAX_STDIN_BYTES = 256 * 1024 * 1024

# JPEG start-of-frame markers (the ones that carry the image size).
_JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
# Channels stored for each PNG colour type.
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}


def image_format(data):
    """'JPEG', 'PNG', 'GIF' or 'BMP' from the first bytes of an encoded
    image (the names TFRecords store in `image/format`), else None."""
    if data[:2] == b'\xff\xd8':
        return 'JPEG'
    if data[:8] == _PNG_SIGNATURE:
        return 'PNG'
    if data[:6] in (b'GIF87a', b'GIF89a'):
        return 'GIF'
    if data[:2] == b'BM':
        return 'BMP'
    return None


def _jpeg_frame(data):
    """The offset of a JPEG's start-of-frame marker (it holds the size and
    the channel count), or None when the walk over the markers fails."""
    position = 2
    while position + 9 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:                       # fill byte
            position += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            position += 2                        # markers without a length
            continue
        if marker in _JPEG_FRAMES:
            return position
        position += 2 + struct.unpack('>H', data[position + 2:position + 4])[0]
    return None


def header_size(data):
    """(width, height) read from the header of encoded JPEG, PNG, GIF or
    BMP bytes without decoding them, or None for anything else."""
    kind = image_format(data)
    if kind == 'PNG' and len(data) >= 24:
        return struct.unpack('>II', data[16:24])
    if kind == 'GIF' and len(data) >= 10:
        return struct.unpack('<HH', data[6:10])
    if kind == 'BMP' and len(data) >= 26:
        if struct.unpack('<I', data[14:18])[0] == 12:   # OS/2 header
            return struct.unpack('<HH', data[18:22])
        width, height = struct.unpack('<ii', data[18:26])
        return abs(width), abs(height)
    if kind == 'JPEG':
        frame = _jpeg_frame(data)
        if frame is not None:
            height, width = struct.unpack('>HH', data[frame + 5:frame + 9])
            return width, height
    return None


def header_channels(data):
    """Channels stored in a JPEG's frame header or a PNG's colour type; 3
    for the rest (GIF and BMP decode to RGB) and for a header that cannot
    be read."""
    kind = image_format(data)
    if kind == 'PNG' and len(data) > 25:
        return _PNG_CHANNELS.get(data[25], 3)
    if kind == 'JPEG':
        frame = _jpeg_frame(data)
        if frame is not None and frame + 9 < len(data):
            return data[frame + 9]
    return 3


def check_image(data, name, max_pixels=MAX_PIXELS):
    """Refuses, from its header, an image larger than `max_pixels`.

    Raises:
      InputError: the header names more than `max_pixels` pixels.
    """
    size = header_size(data)
    if size is not None and max_pixels and size[0] * size[1] > max_pixels:
        raise InputError('%s is %dx%d pixels, more than the %d allowed; '
                         'shrink it, or raise --max-pixels' % (
                             name, size[0], size[1], max_pixels))
    return data


def read_image_file(path):
    """The bytes of an image file; InputError when it is missing."""
    if os.path.isdir(path):
        raise InputError('%s is a folder, not an image file' % path)
    if not os.path.isfile(path):
        raise InputError('image not found: %s' % path)
    with open(path, 'rb') as handle:
        return handle.read()
