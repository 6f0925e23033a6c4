"""The README's set-up commands and Python example stay true."""

import os
import re
import subprocess
import sys

import reference

README = os.path.join(reference.REPO_ROOT, 'README.md')


def _readme():
    with open(README) as handle:
        return handle.read()


def _block_after(marker):
    text = _readme()
    start = text.index(marker)
    match = re.compile(r'```(\w*)\n(.*?)```', re.S).search(text, start)
    return match.group(2)


def test_setup_commands_are_what_ci_runs():
    setup = _block_after('## Set-up').strip().splitlines()
    assert len(setup) == 2
    with open(os.path.join(reference.REPO_ROOT, '.ci', 'run')) as handle:
        ci_lines = [line.strip() for line in handle]
    for command in setup:
        assert command in ci_lines, command


def test_the_main_job_command_is_what_ci_runs_offline():
    command = _block_after('<!-- main job:').strip()
    assert command == '.venv/bin/slimnets classify tests/data/cat.jpg'
    with open(os.path.join(reference.REPO_ROOT, '.ci', 'run')) as handle:
        ci = handle.read()
    assert 'offline ' + command in ci
    assert os.path.isfile(os.path.join(reference.REPO_ROOT, 'tests', 'data',
                                       'cat.jpg'))


def test_classify_example_prints_the_expected_top5():
    reference.require(os.path.join(reference.PRETRAINED, 'mobilenet_v1'))
    code = _block_after('<!-- example: classify')
    completed = subprocess.run([sys.executable, '-c', code],
                               cwd=reference.REPO_ROOT, capture_output=True,
                               text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    printed = completed.stdout.strip().splitlines()
    shown = _block_after('Run from the repository root, it prints:')
    shown = shown.strip().splitlines()
    assert len(printed) == len(shown) == 5
    for got, documented in zip(printed, shown):
        # Label index and name exactly; the probability to round-off.
        assert got.rsplit(None, 1)[0] == documented.rsplit(None, 1)[0]
        assert abs(float(got.split()[-1]) - float(documented.split()[-1])) \
            < 0.01
    assert [line.split()[0] for line in printed[:3]] == ['282', '283', '286']


def test_classifier_example_runs():
    reference.require(os.path.join(reference.PRETRAINED, 'mobilenet_v2'))
    code = _block_after('<!-- example: classifier')
    completed = subprocess.run([sys.executable, '-c', code],
                               cwd=reference.REPO_ROOT, capture_output=True,
                               text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "(286, 'Egyptian cat', 0.78" in completed.stdout
