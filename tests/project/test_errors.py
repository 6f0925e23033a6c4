"""One error family: every exception slimnets defines or raises on purpose
derives from slimnets.errors.SlimnetsError."""

import importlib
import inspect
import os
import re

import pytest

from slimnets import errors

import reference

PACKAGE = os.path.join(reference.REPO_ROOT, 'slimnets')


def _module_names():
    for root, _, files in os.walk(PACKAGE):
        for name in sorted(files):
            if name.endswith('.py') and name != '__main__.py':
                dotted = os.path.relpath(os.path.join(root, name),
                                         reference.REPO_ROOT)[:-3]
                yield dotted.replace(os.sep, '.').replace('.__init__', '')


def test_every_exception_class_has_one_root():
    strays = []
    for name in _module_names():
        module = importlib.import_module(name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and \
                    value.__module__.startswith('slimnets') and \
                    not issubclass(value, errors.SlimnetsError):
                strays.append('%s.%s' % (value.__module__, value.__name__))
    assert not strays, strays


def test_no_builtin_exception_is_raised_directly():
    pattern = re.compile(r'raise (ValueError|TypeError|KeyError|RuntimeError|'
                         r'Exception|OSError|IOError)\(')
    found = []
    for name in _module_names():
        path = os.path.join(reference.REPO_ROOT, *name.split('.'))
        path = path + '.py' if os.path.isfile(path + '.py') else os.path.join(
            path, '__init__.py')
        with open(path) as handle:
            for number, line in enumerate(handle, 1):
                if pattern.search(line):
                    found.append('%s:%d %s' % (name, number, line.strip()))
    assert not found, found


@pytest.mark.parametrize('cls,standard', [
    (errors.InputError, ValueError), (errors.CheckpointError, ValueError),
    (errors.ExportError, RuntimeError), (errors.UnknownNameError, KeyError),
    (errors.ArgumentTypeError, TypeError), (errors.UsageError, ValueError)])
def test_errors_are_also_the_standard_type_callers_expect(cls, standard):
    assert issubclass(cls, errors.SlimnetsError) and issubclass(cls, standard)


def test_unknown_names_read_as_plain_messages():
    message = str(errors.UnknownNameError("'x' is not in the catalogue"))
    assert message == "'x' is not in the catalogue"
