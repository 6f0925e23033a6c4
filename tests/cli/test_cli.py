"""The `slimnets` command line: help, doctor, quiet output, the default model.

Most tests run the command in this process (`cli`); the ones whose point is
the program a user starts (start-up cost, TensorFlow's log) run it in a
fresh process (`cli_process`).
"""

import os
import subprocess
import sys

import pytest

from slimnets import inference
from slimnets import registry
from slimnets import tflog
from slimnets.inference import models

import helpers


def test_help_lists_doctor(cli):
    completed = cli('--help')
    assert completed.returncode == 0
    assert 'doctor' in completed.stdout
    doctor_help = cli('doctor', '--help')
    assert doctor_help.returncode == 0 and '--networks' in doctor_help.stdout


@pytest.mark.parametrize('args', [['--help'], ['classify', '--help'],
                                  ['train', '--help'], ['list', '--help'],
                                  ['data', 'build', '--help']])
def test_help_never_imports_tensorflow(args):
    code = ('import sys\nfrom slimnets import cli\ntry:\n    cli.main(%r)\n'
            'except SystemExit:\n    pass\n'
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n"
            % (args,))
    completed = subprocess.run([sys.executable, '-c', code],
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert 'usage: slimnets' in completed.stdout


def test_doctor_builds_counts_and_checks(cli):
    completed = cli('doctor', '--networks', 'mobilenet_v1_025',
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


def test_unknown_network_is_a_one_line_error(cli, one_line_error):
    completed = cli('doctor', '--networks', 'mobilenet_v9')
    one_line_error(completed, 'unknown network mobilenet_v9')


def test_classify_prints_no_tensorflow_log_lines(cli_process, pretrained_dir):
    """The installed program, as a user starts it: quiet by default, the
    C++ log back with --verbose."""
    image = os.path.join(pretrained_dir, 'cat.bmp')
    prefix = os.path.join(pretrained_dir, 'mobilenet_v1', '0.25_128',
                          'model.ckpt')
    env = {k: v for k, v in os.environ.items() if k != tflog.LEVEL_VARIABLE}
    quiet = cli_process('classify', image, '--checkpoint', prefix,
                        '--top-k', '1', env=env)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert '283  tiger cat' in quiet.stdout
    assert quiet.stderr == '', quiet.stderr
    # (The command line asks TensorFlow for a thread pool per session, so
    # its own runtime runs one image on one thread, in the caller's.)
    env.pop(tflog.THREAD_POOLS_VARIABLE, None)
    loud = cli_process('classify', image, '--checkpoint', prefix, '--top-k',
                       '1', '--verbose', '--runtime', 'tensorflow', env=env)
    assert loud.returncode == 0
    assert 'runtime: tensorflow (batch 1 on one thread)' in loud.stdout
    assert any(tflog.severity(line) is not None
               for line in loud.stderr.splitlines()), loud.stderr


@pytest.mark.parametrize('line,severity', [
    ('I0000 00:00:1796123727.597610   10811 port.cc:153] oneDNN custom', 0),
    ('E0000 00:00:1796123549.917271    8354 cuda_platform.cc:52] failed', 2),
    ('WARNING: All log messages before absl::InitializeLog() is called', 1),
    ('slimnets classify: error: image not found: x.jpg', None),
    ('  5%|#         | 1/20 [00:01<00:19]', None),
])
def test_tensorflow_log_lines_are_recognised(line, severity):
    assert tflog.severity(line) == severity


def test_log_level_follows_the_user(monkeypatch):
    monkeypatch.delenv(tflog.LEVEL_VARIABLE, raising=False)
    assert tflog.level_from_environment() == tflog.DEFAULT_LEVEL
    assert tflog.level_from_environment(verbose=True) is None
    monkeypatch.setenv(tflog.LEVEL_VARIABLE, '1')
    assert tflog.level_from_environment() == 1


FLOAT_V2 = 'mobilenet_v2_1.0_224'


def test_the_default_model_is_the_embedded_one():
    from slimnets import checkpoints
    assert registry.DEFAULT_MODEL == 'embedded'
    assert models.weights_for() == registry.DEFAULT_MODEL
    assert models.weights_name(models.weights_for()) == \
        'mobilenet_v2_1.0_224_quant (embedded)'
    item = checkpoints.entry(FLOAT_V2)   # the float v2 stays in the catalogue
    assert (item.network, item.input_size) == ('mobilenet_v2', 224)
    assert models.weights_for(model='mobilenet_v1_0.25_128') == \
        'mobilenet_v1_0.25_128'
    assert models.weights_for('a/model.ckpt', 'mobilenet_v1') == 'a/model.ckpt'
    with pytest.raises(inference.InputError, match='names a network'):
        models.weights_for(model='mobilenet_v1')


def test_classify_with_a_catalogue_model_reads_it_from_the_cache(
        cli, tmp_path, monkeypatch, pretrained_dir):
    """`--model mobilenet_v2_1.0_224` resolves the catalogue entry from the
    cache (here: the recovered v2 1.0_224 weights placed where fetch puts
    them)."""
    cache = tmp_path / 'cache'
    target = cache / FLOAT_V2
    target.mkdir(parents=True)
    source = os.path.join(pretrained_dir, 'mobilenet_v2', '1.0_224')
    for name in os.listdir(source):
        if name.startswith('model.ckpt'):
            os.symlink(os.path.join(source, name), str(target / name.replace(
                'model.ckpt', FLOAT_V2 + '.ckpt')))
    monkeypatch.setenv('SLIMNETS_CACHE', str(cache))
    completed = cli('classify', os.path.join(pretrained_dir, 'cat.bmp'),
                    '--top-k', '1', '--model', FLOAT_V2)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.startswith('mobilenet_v2 (depth_multiplier=1.0) '
                                       'at 224x224')
    assert '286  Egyptian cat' in completed.stdout


def test_classify_with_nothing_fetchable_names_the_model_in_one_line(
        cli, one_line_error, tmp_path, monkeypatch):
    """An empty cache and sources that answer 403: one line that names the
    catalogue model, every URL tried and the ways out; nothing is cached."""
    from slimnets.checkpoints import published as catalogue


    def forbidden(handler):
        handler.send_error(403)

    image = tmp_path / 'image.png'
    image.write_bytes(b'\x89PNG\r\n\x1a\n')
    cache = tmp_path / 'cache'
    with helpers.Server({'/a.tgz': forbidden, '/b.h5': forbidden}) as server:
        entries = catalogue._load()  # noqa: SLF001
        name = FLOAT_V2
        monkeypatch.setitem(entries, name, entries[name]._replace(sources=(
            catalogue.Source(server.url('/a.tgz'), 'slim-archive'),
            catalogue.Source(server.url('/b.h5'), 'keras-h5'))))
        monkeypatch.setenv('SLIMNETS_CACHE', str(cache))
        completed = cli('classify', str(image), '--model', name)
        assert server.requests == ['/a.tgz', '/b.h5']
    one_line_error(completed, name, server.url('/a.tgz'), server.url('/b.h5'),
                   '403', '--checkpoint PATH', 'slimnets fetch %s --url' % name)
    assert not (cache / name).exists()


def test_thread_pools_are_left_alone_once_tensorflow_is_imported(
        monkeypatch):
    """The command line asks for a pool per session only before TensorFlow
    starts (the subprocess test above sees it); in a process that already
    imported TensorFlow it sets nothing, and a user's value stands."""
    monkeypatch.delenv(tflog.THREAD_POOLS_VARIABLE, raising=False)
    assert tflog.prefer_session_thread_pools() is False
    assert tflog.THREAD_POOLS_VARIABLE not in os.environ
    monkeypatch.setenv(tflog.THREAD_POOLS_VARIABLE, '1')
    assert tflog.prefer_session_thread_pools() is True
