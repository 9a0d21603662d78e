"""The `dnn_cool` command: `python -m dnn_cool demo` end to end at a miniature size, and `--help`."""
import subprocess
import sys


def test_help_lists_demo_flags():
    out = subprocess.run([sys.executable, '-m', 'dnn_cool', 'demo', '--help'], capture_output=True, text=True, check=True)
    for flag in ('--n-train', '--epochs', '--log-dir', '--no-progress'):
        assert flag in out.stdout


def test_demo_runs_end_to_end(tmp_path):
    cmd = [sys.executable, '-m', 'dnn_cool', 'demo', '--n-train', '200', '--n-valid', '100', '--n-test', '100',
           '--epochs', '2', '--width', '8', '--log-dir', str(tmp_path)]  # progress on, into a pipe: a log, not a terminal
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    # in a log, one line per epoch and no progress bar (a bar writes carriage-return updates, hundreds per epoch)
    assert '\r' not in out.stdout + out.stderr
    assert [l.split(':')[0] for l in text.splitlines() if l.startswith('epoch ')] == ['epoch 0', 'epoch 1'], text[:2000]
    for expected in ('Tuned thresholds', 'task_path', 'metric_name', 'metric_res', 'num_samples',
                     'Tree explanations', 'inp ', 'camera_blocked | decoded:', 'Walkthrough finished'):
        assert expected in text, expected
    assert (tmp_path / 'thresholds.json').exists() and (tmp_path / 'model.pt').exists()
    assert any(p.name.startswith('events.out.tfevents') for p in tmp_path.rglob('*'))


def test_unknown_command_fails():
    out = subprocess.run([sys.executable, '-m', 'dnn_cool', 'train'], capture_output=True, text=True)
    assert out.returncode == 2 and 'invalid choice' in out.stderr


def test_full_walkthrough_meets_its_targets(tmp_path):
    "The README's main job at its default size: every accuracy / MAE target of the walkthrough is met (about a minute)."
    cmd = [sys.executable, '-m', 'dnn_cool', 'demo', '--no-progress', '--threads', '2', '--log-dir', str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(l for l in out.stdout.splitlines() if l.startswith('Targets'))
    met, total = line.split(': ')[1].split(' met')[0].split('/')
    assert int(total) == 13 and met == total, line
    # the blocked-camera explanation shows camera_blocked alone
    tree = out.stdout.split('Tree explanations:')[1].splitlines()
    assert tree[1].startswith('inp ') and tree[2].startswith('└── camera_blocked | decoded: True') and tree[3].startswith('inp ')
