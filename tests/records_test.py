"""Result files written whole, and one process per run or sweep folder."""

import json
import os

import pytest

from cnn_jax import records
import _util


def test_a_claimed_folder_is_refused_until_its_holder_is_killed(tmp_path):
  holder = _util.hold_folder(tmp_path)
  try:
    with pytest.raises(records.FolderInUse,
                       match=f'in use by process {holder.pid} on '):
      records.claim_folder(str(tmp_path))
  finally:
    holder.kill()  # SIGKILL: no clean-up code of the holder runs.
    holder.wait()
  records.claim_folder(str(tmp_path))
  records.claim_folder(str(tmp_path))  # Again from the same process: no-op.
  with open(tmp_path / records.LOCK_FILE) as f:
    assert f.read().startswith(f'process {os.getpid()} on ')


def test_json_files_are_replaced_whole(tmp_path):
  path = str(tmp_path / 'summary.json')
  records.write_json(path, {'b': 1, 'a': [1.5]})
  records.write_json(path, {'a': 2})
  with open(path) as f:
    assert json.load(f) == {'a': 2}
  lines = str(tmp_path / 'metrics.jsonl')
  records.write_json_lines(lines, [{'epoch': 1}, {'epoch': 2}])
  assert records.read_json_lines(lines) == [{'epoch': 1}, {'epoch': 2}]
  assert records.read_json_lines(str(tmp_path / 'none.jsonl')) == []
  assert sorted(os.listdir(tmp_path)) == ['metrics.jsonl', 'summary.json']


def test_a_folder_that_cannot_be_written_is_refused_creating_nothing(
    tmp_path):
  (tmp_path / 'afile').write_text('')
  cases = {
      str(tmp_path / 'afile'): f'workdir {tmp_path}/afile is a file, not a '
                               f'folder',
      str(tmp_path / 'afile' / 'run'): f'workdir {tmp_path}/afile/run cannot '
                                       f'be made: {tmp_path}/afile is a file',
      # Read-only even for root, whom file modes do not stop.
      '/sys/cnn_jax_run': 'workdir /sys/cnn_jax_run cannot be written: '
                          'Permission denied in /sys',
  }
  for folder, message in cases.items():
    with pytest.raises(records.FolderError) as e:
      records.claim_folder(folder)
    assert str(e.value) == message
  assert os.listdir(tmp_path) == ['afile']


def test_a_relative_folder_not_made_yet_counts_as_writable(
    tmp_path, monkeypatch):
  """`--config.data.data_dir=workdirs/tfds` in a fresh clone: TFDS makes it."""
  monkeypatch.chdir(tmp_path)
  assert records.unwritable('workdirs/tfds') is None
  assert records.check_folder('workdirs/run') == str(tmp_path / 'workdirs/run')
  assert records.unwritable('/sys/tfds') == ('cannot be written: Permission '
                                             'denied in /sys')
  assert os.listdir(tmp_path) == []


def test_a_tilde_is_the_home_folder(tmp_path, monkeypatch):
  monkeypatch.setenv('HOME', str(tmp_path))
  assert records.check_folder('~/runs/a') == f'{tmp_path}/runs/a'
  assert not (tmp_path / 'runs').exists()  # Checked, not made.


def test_a_refused_write_leaves_no_half_file_and_a_claim_is_one_error(tmp_path):
  """A full disk (here: writes past 0 bytes refused, EFBIG) while claiming a
  folder is one FolderError naming it; a refused result write leaves neither
  the file nor its temporary copy."""
  path = tmp_path / 'summary.json'
  with _util.writes_limited_to(0):
    with pytest.raises(records.FolderError, match='cannot claim .*fresh'):
      records.claim_folder(str(tmp_path / 'fresh'))
    with pytest.raises(OSError):
      records.write_json(str(path), {'a': 1})
  assert os.listdir(tmp_path) == ['fresh']
  assert not path.exists()
