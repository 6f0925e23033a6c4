"""Every command with bad arguments: a usage error on one line, exit 2,
before any work starts (no TensorFlow graph is built for these)."""

import pytest

from slimnets import cli as cli_module
from slimnets.cli import checkpoints as checkpoint_commands

BAD = [
    ('classify', 'x.jpg', '--top-k', '0'),
    ('classify', 'x.jpg', '--top-k', '-1'),
    ('classify', 'x.jpg', '--image-size', '0'),
    ('classify', 'x.jpg', '--image-size', '-3'),
    ('classify', 'x.jpg', '--image-size', '100000'),
    ('classify', 'x.jpg', '--image-size', 'big'),
    ('eval', '--data', 'd', '--batch-size', '-1'),
    ('eval', '--data', 'd', '--batch-size', '0'),
    ('eval', '--data', 'd', '--max-images', '-2'),
    ('eval', '--data', 'd', '--json', '/no/such/folder/result.json'),
    ('eval', '--checkpoint', 'c'),                      # --data missing
    ('eval', '--data', 'd', '--shard', '1'),            # --num-shards missing
    ('eval', '--data', 'd', '--shard', '3', '--num-shards', '3'),
    ('eval', '--data', 'd', '--shard', '-1', '--num-shards', '3'),
    ('eval', '--merge', 'a.json', '--data', 'd'),
    ('fetch', 'mobilenet_v1_0.25_128', '--url', 'notaurl'),
    ('export', '--format', 'frozen', '--output', 'x.pb', '--batch-size',
     '0'),
    ('export', '--format', 'pdf', '--output', 'x'),
    ('train', '--train-dir', 't', '--data', 'd', '--batch-size', '0'),
    ('train', '--train-dir', 't', '--data', 'd', '--save-every-steps', '0'),
    ('train', '--train-dir', 't', '--data', 'd', '--max-steps', '-5'),
    ('train', '--train-dir', 't', '--data', 'd', '--learning-rate', '0'),
    ('train', '--train-dir', 't', '--data', 'd', '--learning-rate', 'nan'),
    ('train', '--train-dir', 't', '--data', 'd', '--num-classes', '0'),
    ('train', '--train-dir', 't', '--data', 'd', '--batch-norm-decay', '2'),
    ('train', '--train-dir', 't', '--data', 'd', '--optimizer', 'magic'),
    ('doctor', '--image-size', '7'),
    ('data', 'build', '--input', 'i', '--output', 'o', '--shards', '0'),
    ('data', 'build', '--input', 'i', '--output', 'o',
     '--validation-fraction', '1'),
    ('data', 'build', '--input', 'i'),                  # --output missing
    ('data',),
    ('list', '--family', 'v9'),
    ('export', '--checkpoint', 'c', '--format', 'frozen', '--output',
     '/no/such/folder/m.pb'),
    ('train', '--train-dir', '/no/such/folder/run', '--data', 'd'),
    ('inspect',),
    ('nonsense',),
]


@pytest.mark.parametrize('args', BAD, ids=lambda a: ' '.join(a))
def test_bad_arguments_are_one_line_usage_errors(args, cli, one_line_error):
    one_line_error(cli(*args), status=2)


def test_every_command_is_walked():
    walked = {args[0] for args in BAD}
    parser = cli_module.build_parser()
    commands = parser._subparsers._group_actions[0].choices  # noqa: SLF001
    assert set(commands) <= walked | {'nonsense'}, set(commands) - walked


def test_a_folder_given_as_an_image_is_named(cli, one_line_error, tmp_path,
                                             pretrained_dir):
    completed = cli('classify', str(tmp_path), '--checkpoint',
                    pretrained_dir + '/mobilenet_v1/0.25_128/model.ckpt')
    one_line_error(completed, 'is a folder, not an image file')


def test_ctrl_c_is_one_line_and_debug_shows_the_traceback(cli, one_line_error,
                                                          monkeypatch):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint_commands, 'run_list', interrupted)
    one_line_error(cli('list'), 'interrupted (Ctrl-C)')
    with pytest.raises(KeyboardInterrupt):
        cli_module.main(['list', '--debug'])


@pytest.mark.parametrize('args', [
    ('export', '--checkpoint', 'c', '--format', 'frozen', '--output',
     '{missing}/m.pb'),
    ('train', '--train-dir', '{missing}/run', '--data', 'd'),
    ('eval', '--data', 'd', '--json', '{missing}/r.json'),
])
def test_output_places_are_checked_before_work(args, cli, one_line_error,
                                               tmp_path):
    missing = str(tmp_path / 'missing')
    completed = cli(*[a.format(missing=missing) for a in args])
    one_line_error(completed, 'the folder %s does not exist' % missing,
                   status=2)
