"""The layering of ARCHITECTURE.md, enforced: no import looks up."""

import ast
import os
import re

import reference

PACKAGE = os.path.join(reference.REPO_ROOT, 'slimnets')


def _layers():
    """{module pattern: layer} from the table in ARCHITECTURE.md."""
    with open(os.path.join(reference.REPO_ROOT, 'ARCHITECTURE.md')) as handle:
        text = handle.read()
    table = text[text.index('<!-- layers'):]
    layers = {}
    for match in re.finditer(r'^\| (\d) \| (.*?) \|', table, re.M):
        for name in re.findall(r'`([\w.*]+)`', match.group(2)):
            layers[name] = int(match.group(1))
    return layers


LAYERS = _layers()


def layer_of(module):
    """The layer of a dotted module name (exact entry, else 'parent.*')."""
    if module in LAYERS:
        return LAYERS[module]
    parts = module.split('.')
    for cut in range(len(parts) - 1, 0, -1):
        pattern = '.'.join(parts[:cut]) + '.*'
        if pattern in LAYERS:
            return LAYERS[pattern]
    return None


def _modules():
    for root, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith('.py'):
                path = os.path.join(root, name)
                dotted = os.path.relpath(path, reference.REPO_ROOT)[:-3].replace(
                    os.sep, '.')
                if dotted.endswith('.__init__'):
                    dotted = dotted[:-len('.__init__')]
                yield dotted, path


def _imports(path, module):
    """[(imported slimnets module, line, inside a function)]."""
    with open(path) as handle:
        tree = ast.parse(handle.read())
    package = module if path.endswith('__init__.py') else module.rpartition('.')[0]
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(
                child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, in_function)
                             for a in child.names if a.name.startswith('slimnets'))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ''
                if child.level:
                    base = '.'.join(package.split('.')[:len(package.split('.')) -
                                                      child.level + 1] +
                                    ([base] if base else []))
                if base.startswith('slimnets'):
                    for alias in child.names:
                        candidate = base + '.' + alias.name
                        target = candidate if layer_of(candidate) is not None and \
                            _is_module(candidate) else base
                        found.append((target, child.lineno, in_function))
            visit(child, nested)

    visit(tree, False)
    return found


def _is_module(dotted):
    path = os.path.join(reference.REPO_ROOT, *dotted.split('.'))
    return os.path.isfile(path + '.py') or os.path.isdir(path)


def test_every_module_has_a_layer():
    missing = [m for m, _ in _modules() if layer_of(m) is None]
    assert not missing, 'add these to the table in ARCHITECTURE.md: %s' % missing


def test_no_import_looks_up():
    violations = []
    for module, path in _modules():
        own = layer_of(module)
        for target, line, _ in _imports(path, module):
            if layer_of(target) is not None and layer_of(target) > own:
                violations.append('%s:%d imports %s (layer %d > %d)' % (
                    module, line, target, layer_of(target), own))
    assert not violations, violations


def test_only_the_command_line_imports_inside_functions():
    """Lazy imports of slimnets modules are for the CLI's start-up time."""
    lazy = ['%s:%d %s' % (module, line, target)
            for module, path in _modules() if layer_of(module) < 8
            for target, line, inside in _imports(path, module) if inside]
    assert not lazy, lazy


def test_the_checkpoint_layer_never_needs_inference():
    for module, path in _modules():
        if module.startswith('slimnets.checkpoints'):
            for target, line, _ in _imports(path, module):
                assert not target.startswith(('slimnets.inference',
                                              'slimnets.export',
                                              'slimnets.training',
                                              'slimnets.cli')), (module, line)
