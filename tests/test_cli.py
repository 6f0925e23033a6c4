"""The `slimnets` command line, run as a user would: in a subprocess."""

import subprocess
import sys


def run_cli(*args):
    return subprocess.run([sys.executable, '-m', 'slimnets'] + list(args),
                          capture_output=True, text=True, timeout=600)


def test_help_lists_doctor():
    completed = run_cli('--help')
    assert completed.returncode == 0
    assert 'doctor' in completed.stdout
    doctor_help = run_cli('doctor', '--help')
    assert doctor_help.returncode == 0 and '--networks' in doctor_help.stdout


def test_doctor_builds_counts_and_checks():
    completed = run_cli('doctor', '--networks', 'mobilenet_v1_025',
                        'mobilenet_v3_small')
    assert completed.returncode == 0, completed.stderr[-3000:]
    out = completed.stdout
    assert 'tf_slim.batch_norm on this TensorFlow:' in out
    assert 'slimnets.slim.batch_norm: works' in out
    rows = {line.split()[0]: line.split() for line in out.splitlines()
            if line.startswith('mobilenet_')}
    assert rows['mobilenet_v1_025'][1:5] == ['224', '0.470M', '41.0M', '137']
    assert 'ok' in rows['mobilenet_v1_025']
    assert 'known' in rows['mobilenet_v3_small']
    assert 'All 2 networks built and ran.' in out


def test_unknown_network_is_a_one_line_error():
    completed = run_cli('doctor', '--networks', 'mobilenet_v9')
    assert completed.returncode == 1
    assert 'Traceback' not in completed.stderr
    assert completed.stderr.strip().splitlines()[-1].startswith(
        'slimnets doctor: error: unknown network mobilenet_v9')
