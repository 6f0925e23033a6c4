"""Every command is quiet by default: nothing but slimnets' own lines on
stderr, in a real process whose descriptor 2 is a pipe.

One fresh process runs every command in turn through `slimnets.cli.main`
(the way the `slimnets` program does), writing a marker line to
descriptor 2 before each, so that a stray line is blamed on its command.
The process records every line slimnets itself logs; whatever else reaches
stderr (TensorFlow's or absl's log lines, the converter's lines, Python
warnings, deprecation notices) fails the test, with the command named.
Progress bars are off (`--no-progress`) where a command has them.

The default model here is the embedded one with an empty cache, and no
socket may connect anywhere, so the offline main job (classify, eval,
export, train with nothing named) is part of the run.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

import golden

CAT = os.path.join(golden.DATA, 'cat.jpg')
MARKER = '@@slimnets-quiet-test@@ '
# Nothing here reads ../shared: the second CI pass need not repeat it.
pytestmark = pytest.mark.reads_no_shared

_DRIVER = textwrap.dedent('''
    import json, logging, os, socket, sys
    from slimnets import cli
    logged = []

    def offline(self, address):   # every command here works with no network
        raise OSError('network use in a command that must work offline: '
                      + repr(address))

    socket.socket.connect = socket.socket.connect_ex = offline

    class Record(logging.Handler):
        def emit(self, record):
            logged.append(record.getMessage())

    logging.getLogger('slimnets').addHandler(Record())
    commands = json.loads(sys.argv[1])
    codes = []
    for argv in commands:
        sys.stderr.flush()
        os.write(2, ('%s' + ' '.join(argv) + '\\n').encode())
        codes.append(cli.main(argv))
        sys.stderr.flush()
    sys.stdout.flush()
    print(json.dumps({'codes': codes, 'logged': logged}))
''' % MARKER)


def _leaks(stderr, logged):
    """{command: [lines that are not slimnets' own]}."""
    own = set()
    for message in logged:
        own.update(line.strip() for line in message.splitlines())
    leaks = {}
    command = '(before the first command)'
    for line in stderr.splitlines():
        if line.startswith(MARKER):
            command = line[len(MARKER):]
            continue
        if line.strip() and line.strip() not in own:
            leaks.setdefault(command, []).append(line)
    return leaks


@pytest.fixture(scope='module')
def commands(tmp_path_factory):
    """The command lines to run: every command, every export format and
    quantization, on a small v1 0.25 checkpoint and on the embedded default."""
    import small_models

    work = tmp_path_factory.mktemp('quiet')
    images = small_models.encoded_pngs(small_models.smooth_images(4, 80))
    tree = work / 'flowers'
    for index, data in enumerate(images):
        folder = tree / ('daisy', 'tulip')[index % 2]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ('%d.png' % index)).write_bytes(data)
    imagenet = work / 'imagenet' / 'n02124075'   # Egyptian cat
    imagenet.mkdir(parents=True)
    (imagenet / 'cat.jpg').write_bytes(open(CAT, 'rb').read())
    (work / 'small').mkdir()
    _, small = small_models.calibrated_checkpoint(
        str(work / 'small'), 'mobilenet_v1', 0.25, 64, 1001)
    out = work / 'out'
    out.mkdir()
    qat = str(work / 'qat')
    small_args = ['--checkpoint', small, '--image-size', '64']
    lines = [
        ['classify', CAT, '--top-k', '1', '--json', str(work / 'top.json')],
        ['eval', '--data', str(imagenet.parent), '--no-progress'],
        ['export', '--format', 'tflite', '--output', str(out / 'default.tflite')],
        ['train', '--train-dir', str(work / 'tuned'), '--data', str(tree),
         '--max-steps', '1', '--batch-size', '2', '--image-size', '96',
         '--no-progress'],
        ['classify', CAT, '--top-k', '1'] + small_args,
        ['inspect', small],
        ['list'],
        ['doctor'],
        ['data', 'build', '--input', str(tree), '--output',
         str(work / 'records'), '--workers', '1', '--no-progress'],
        ['train', '--train-dir', qat, '--data', str(tree), '--model',
         'mobilenet_v1_025', '--image-size', '64', '--max-steps', '1',
         '--batch-size', '2', '--quantize-delay', '0', '--no-progress'],
        ['export', '--checkpoint', qat, '--format', 'tflite', '--output',
         str(out / 'qat_uint8.tflite')],
        ['export', '--checkpoint', qat, '--format', 'tflite',
         '--inference-type', 'int8', '--output', str(out / 'qat_int8.tflite')],
    ]
    for fmt, name in (('frozen', 'm.pb'), ('saved_model', 'saved'),
                      ('tflite', 'm.tflite'), ('onnx', 'm.onnx'),
                      ('openvino', 'm.xml'), ('keras', 'm.keras')):
        lines.append(['export', '--format', fmt, '--output', str(out / name)]
                     + small_args)
    for quantization in ('float16', 'dynamic', 'int8'):
        lines.append(['export', '--format', 'tflite', '--quantization',
                      quantization, '--output',
                      str(out / ('m_%s.tflite' % quantization)),
                      '--representative-data', str(tree / 'daisy')]
                     + small_args)
    return lines


def test_every_command_is_quiet_by_default(commands, tmp_path):
    env = dict(os.environ)
    for name in ('TF_CPP_MIN_LOG_LEVEL', 'TF_OVERRIDE_GLOBAL_THREADPOOL',
                 'PYTHONWARNINGS'):
        env.pop(name, None)
    env['SLIMNETS_CACHE'] = str(tmp_path / 'empty-cache')
    completed = subprocess.run(
        [sys.executable, '-c', _DRIVER, json.dumps(commands)],
        capture_output=True, text=True, timeout=900, env=env)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    failed = [' '.join(argv) for argv, code in zip(commands, result['codes'])
              if code != 0]
    assert not failed, (failed, completed.stderr[-3000:])
    leaks = _leaks(completed.stderr, result['logged'])
    assert not leaks, json.dumps(leaks, indent=1)[:6000]
    # The offline main job named the embedded model, in its --json too, and
    # fine-tuning with nothing named said where it started from.
    assert 'model: mobilenet_v2_1.0_224_quant (embedded)' in completed.stdout
    assert '286  Egyptian cat' in completed.stdout
    json_path = [argv[argv.index('--json') + 1] for argv in commands
                 if '--json' in argv][0]
    with open(json_path) as handle:
        assert json.load(handle)['model'] == \
            'mobilenet_v2_1.0_224_quant (embedded)'
    assert 'fine-tuning starts from the weights of ' \
        'mobilenet_v2_1.0_224_quant (embedded)' in completed.stdout


def test_the_leak_detector_sees_a_stray_line():
    """The check above can fail: a TensorFlow line or a warning that is not
    one of slimnets' own log lines is reported under its command."""
    stderr = '\n'.join([
        MARKER + 'export --format tflite',
        'converting the embedded file (once)',
        'fully_quantize: 0, inference_type: 6, input_inference_type: FLOAT32',
        MARKER + 'list',
        "/x.py:3: UserWarning: tf.lite.Interpreter is deprecated"])
    leaks = _leaks(stderr, ['converting the embedded file (once)'])
    assert leaks == {
        'export --format tflite': [
            'fully_quantize: 0, inference_type: 6, input_inference_type: '
            'FLOAT32'],
        'list': ["/x.py:3: UserWarning: tf.lite.Interpreter is deprecated"]}
