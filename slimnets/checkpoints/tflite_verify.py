"""Checking a TFLite file's structure before TensorFlow Lite parses it.

The TFLite interpreter trusts its input: a truncated or damaged file can
crash the Python process (a segmentation fault), not raise.  `verify`
walks the FlatBuffer the way the interpreter will read it and raises
`CheckpointError` first if anything is out of place:

  - the size, the `TFL3` file identifier and the root table;
  - every table's vtable and object, every offset, vector and string
    inside the buffer (strings NUL-terminated);
  - the references between parts: buffer, tensor, operator-code and
    subgraph indices in range, constant data the size its tensor's shape
    and type need, quantization parameters that fit their tensor;
  - features slimnets does not read (sparse tensors, variant tensors,
    external buffers, StableHLO operator options, custom quantization) are
    refused rather than handed on unverified.

Field numbers follow TensorFlow Lite's `schema.fbs`.
"""

import struct

from slimnets.errors import CheckpointError
from slimnets.errors import SlimnetsError

__all__ = ['IDENTIFIER', 'MAX_BYTES', 'verify']

IDENTIFIER = b'TFL3'
MAX_BYTES = 2 << 30   # a FlatBuffer addresses at most 2 GiB

# Bytes per element of each TensorType (0 for types slimnets does not size).
_TYPE_BYTES = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 5: 0, 6: 1, 7: 2, 8: 8, 9: 1,
               10: 8, 11: 16, 12: 8, 13: 0, 14: 0, 15: 4, 16: 2, 17: 0,
               18: 2, 19: 0, 20: 0}
_BUILTIN_OPTIONS_MAX = 126
# Builtin options tables that hold offsets: {type: {field: kind}}.
_OPTION_OFFSETS = {3: {1: 'int32s', 2: 'int32s'}, 17: {0: 'int32s'},
                   30: {0: 'int32s'}, 111: {0: 'string', 1: 'string'},
                   115: {0: 'int32s'}}


class _Bad(SlimnetsError):
    """Internal: what is wrong, before it is worded as a CheckpointError."""


class _Buffer(object):
    """Bounds-checked little-endian reads."""

    def __init__(self, data):
        self.data = data
        self.size = len(data)

    def unpack(self, fmt, position):
        width = struct.calcsize(fmt)
        if position < 0 or position + width > self.size:
            raise _Bad('a read at byte %d runs past the end (%d bytes)'
                       % (position, self.size))
        return struct.unpack_from('<' + fmt, self.data, position)[0]


class _Table(object):
    """One FlatBuffer table, its vtable checked."""

    def __init__(self, buffer, position, what):
        self.buffer, self.position, self.what = buffer, position, what
        vtable = position - buffer.unpack('i', position)
        self.vtable_size = buffer.unpack('H', vtable)
        self.object_size = buffer.unpack('H', vtable + 2)
        if (self.vtable_size < 4 or self.vtable_size % 2 or
                vtable + self.vtable_size > buffer.size or
                self.object_size < 4 or
                position + self.object_size > buffer.size):
            raise _Bad('the %s table at byte %d has a bad vtable'
                       % (what, position))
        self.vtable = vtable

    def field(self, number, width):
        """Byte position of field `number` (None if absent)."""
        entry = 4 + 2 * number
        if entry >= self.vtable_size:
            return None
        offset = self.buffer.unpack('H', self.vtable + entry)
        if offset == 0:
            return None
        if offset < 4 or offset + width > self.object_size:
            raise _Bad('field %d of the %s table lies outside it'
                       % (number, self.what))
        return self.position + offset

    def scalar(self, number, fmt, default=0):
        position = self.field(number, struct.calcsize(fmt))
        return default if position is None else self.buffer.unpack(
            fmt, position)

    def _target(self, number):
        position = self.field(number, 4)
        if position is None:
            return None
        target = position + self.buffer.unpack('I', position)
        if target >= self.buffer.size:
            raise _Bad('field %d of the %s table points past the end'
                       % (number, self.what))
        return target

    def table(self, number, what):
        target = self._target(number)
        return None if target is None else _Table(self.buffer, target, what)

    def vector(self, number, element_bytes, what):
        """(first element position, length) of a vector field, or None."""
        target = self._target(number)
        if target is None:
            return None
        return _vector_at(self.buffer, target, element_bytes, what)

    def values(self, number, fmt, what):
        """The elements of a scalar vector field ([] if absent)."""
        found = self.vector(number, struct.calcsize(fmt), what)
        if found is None:
            return []
        start, length = found
        return list(struct.unpack_from('<%d%s' % (length, fmt),
                                       self.buffer.data, start))

    def tables(self, number, what):
        """The tables of a vector-of-tables field ([] if absent)."""
        found = self.vector(number, 4, what)
        if found is None:
            return []
        start, length = found
        result = []
        for index in range(length):
            element = start + 4 * index
            target = element + self.buffer.unpack('I', element)
            if target >= self.buffer.size:
                raise _Bad('%s %d points past the end' % (what, index))
            result.append(_Table(self.buffer, target, what))
        return result

    def string(self, number, what):
        target = self._target(number)
        if target is None:
            return None
        start, length = _vector_at(self.buffer, target, 1, what)
        if start + length >= self.buffer.size or \
                self.buffer.data[start + length] != 0:
            raise _Bad('the %s string is not terminated' % what)
        return bytes(self.buffer.data[start:start + length])

    def absent(self, number, feature):
        if self.field(number, 1) is not None:
            raise _Unsupported(feature)


class _Unsupported(SlimnetsError):
    """Internal: a feature slimnets does not read."""


def _vector_at(buffer, position, element_bytes, what):
    length = buffer.unpack('I', position)
    start = position + 4
    if start + length * element_bytes > buffer.size:
        raise _Bad('the %s vector (%d elements) runs past the end'
                   % (what, length))
    return start, length


def _check_tensor(tensor, buffers, number):
    shape = tensor.values(0, 'i', 'tensor shape')
    if any(d < 0 for d in shape):
        raise _Bad('tensor %d has a negative dimension %s' % (number, shape))
    tensor_type = tensor.scalar(1, 'b')
    if tensor_type not in _TYPE_BYTES:
        raise _Bad('tensor %d has an unknown type %d' % (number, tensor_type))
    buffer_index = tensor.scalar(2, 'I')
    if buffer_index >= len(buffers):
        raise _Bad('tensor %d uses buffer %d of %d' % (number, buffer_index,
                                                       len(buffers)))
    tensor.string(3, 'tensor name')
    tensor.absent(6, 'sparse tensors')
    tensor.values(7, 'i', 'tensor shape signature')
    tensor.absent(9, 'variant tensors')
    if tensor.scalar(10, 'I'):
        raise _Unsupported('external buffers')
    elements = 1
    for dimension in shape:
        elements *= dimension
    data_bytes = buffers[buffer_index]
    if data_bytes and _TYPE_BYTES[tensor_type]:
        if data_bytes != elements * _TYPE_BYTES[tensor_type]:
            raise _Bad('tensor %d of shape %s needs %d bytes, its buffer has '
                       '%d' % (number, shape, elements *
                               _TYPE_BYTES[tensor_type], data_bytes))
    quantization = tensor.table(4, 'quantization')
    if quantization is not None:
        quantization.values(0, 'f', 'quantization min')
        quantization.values(1, 'f', 'quantization max')
        scales = quantization.values(2, 'f', 'quantization scale')
        zero_points = quantization.values(3, 'q', 'quantization zero point')
        if quantization.scalar(4, 'B'):
            raise _Unsupported('custom quantization details')
        dimension = quantization.scalar(6, 'i')
        if zero_points and len(zero_points) != len(scales):
            raise _Bad('tensor %d has %d scales and %d zero points'
                       % (number, len(scales), len(zero_points)))
        if len(scales) > 1 and not (0 <= dimension < len(shape) and
                                    shape[dimension] == len(scales)):
            raise _Bad('tensor %d has %d scales along dimension %d of %s'
                       % (number, len(scales), dimension, shape))


def _check_operator(operator, codes, tensors, number):
    if operator.scalar(0, 'I') >= codes:
        raise _Bad('operator %d uses an operator code out of range' % number)
    for field, what in ((1, 'inputs'), (2, 'outputs'), (8, 'intermediates')):
        for index in operator.values(field, 'i', 'operator ' + what):
            if not -1 <= index < tensors:
                raise _Bad('operator %d has %s tensor %d of %d'
                           % (number, what, index, tensors))
    options_type = operator.scalar(3, 'B')
    if options_type > _BUILTIN_OPTIONS_MAX:
        raise _Bad('operator %d has unknown options type %d'
                   % (number, options_type))
    options = operator.table(4, 'operator options')
    if options is not None:
        for field, kind in _OPTION_OFFSETS.get(options_type, {}).items():
            if kind == 'string':
                options.string(field, 'operator option')
            else:
                options.values(field, 'i', 'operator option')
    operator.vector(5, 1, 'custom options')
    operator.values(7, 'b', 'mutating variable inputs')
    if operator.scalar(9, 'Q') or operator.scalar(10, 'Q'):
        raise _Unsupported('large custom options')
    if operator.scalar(11, 'B') or operator.field(12, 4) is not None:
        raise _Unsupported('StableHLO operator options')


def _verify(data):
    if len(data) < 8 or len(data) > MAX_BYTES:
        raise _Bad('%d bytes is not the size of a TFLite model' % len(data))
    if bytes(data[4:8]) != IDENTIFIER:
        raise _Bad('the file identifier is %r, not %r (not a TFLite model)'
                   % (bytes(data[4:8]), IDENTIFIER))
    buffer = _Buffer(data)
    model = _Table(buffer, buffer.unpack('I', 0), 'model')
    codes = model.tables(1, 'operator code')
    for code in codes:
        code.string(1, 'custom code')
        if not 0 <= code.scalar(3, 'i') < 1000:
            raise _Bad('an operator code is out of range')
    buffers = []
    for table in model.tables(4, 'buffer'):
        found = table.vector(0, 1, 'buffer data')
        size = found[1] if found else 0
        offset, external = table.scalar(1, 'Q'), table.scalar(2, 'Q')
        if offset > 1 and (offset + external > len(data)):
            raise _Bad('a buffer lies outside the file')
        buffers.append(size or (external if offset > 1 else 0))
    subgraphs = model.tables(2, 'subgraph')
    if not subgraphs:
        raise _Bad('the model has no subgraph')
    sizes = []
    for subgraph in subgraphs:
        tensors = subgraph.tables(0, 'tensor')
        for number, tensor in enumerate(tensors):
            _check_tensor(tensor, buffers, number)
        for field in (1, 2):
            for index in subgraph.values(field, 'i', 'subgraph inputs'):
                if not 0 <= index < len(tensors):
                    raise _Bad('a subgraph input or output is tensor %d of %d'
                               % (index, len(tensors)))
        for number, operator in enumerate(subgraph.tables(3, 'operator')):
            _check_operator(operator, len(codes), len(tensors), number)
        subgraph.string(4, 'subgraph name')
        sizes.append(len(tensors))
    model.string(3, 'description')
    for index in model.values(5, 'i', 'metadata buffer'):
        if not 0 <= index < len(buffers):
            raise _Bad('metadata refers to buffer %d of %d'
                       % (index, len(buffers)))
    for metadata in model.tables(6, 'metadata'):
        metadata.string(0, 'metadata name')
        if metadata.scalar(1, 'I') >= len(buffers):
            raise _Bad('metadata refers to a buffer out of range')
    for signature in model.tables(7, 'signature'):
        graph = signature.scalar(4, 'I')
        if graph >= len(sizes):
            raise _Bad('a signature names subgraph %d of %d'
                       % (graph, len(sizes)))
        signature.string(2, 'signature key')
        for field in (0, 1):
            for tensor_map in signature.tables(field, 'signature tensor'):
                tensor_map.string(0, 'signature tensor name')
                if tensor_map.scalar(1, 'I') >= sizes[graph]:
                    raise _Bad('a signature names a tensor out of range')
    model.absent(8, 'external buffer groups')
    model.absent(9, 'external buffers')


def verify(data, source='the TFLite model'):
    """Checks `data` (bytes) as a TFLite FlatBuffer; see the module doc.

    Raises:
      CheckpointError: naming `source` and what is wrong.
    """
    try:
        _verify(memoryview(data))
    except _Bad as error:
        raise CheckpointError('%s is damaged or not a TFLite model: %s'
                              % (source, error)) from None
    except _Unsupported as error:
        raise CheckpointError('%s uses %s, which slimnets does not read'
                              % (source, error)) from None
    except struct.error as error:
        raise CheckpointError('%s is damaged or not a TFLite model: %s'
                              % (source, error)) from None
