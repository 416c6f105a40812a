"""The model table, the progress bar and who writes events (what the events
hold, run by run: train_test.py)."""

import contextlib
import io
import os
import re
import time

import numpy as np

from cnn_jax import models
from cnn_jax import monitor
import _util


def test_model_table_shows_shapes_parameters_flops_and_receptive_fields():
  config = _util.tiny_config().model
  with _util.lowered_programs() as lowered:
    table = monitor.model_table(models.create_model(config), config)
  # tabulate lowers each layer to count its FLOPs; its input is made with
  # no operation of its own (jnp.zeros would lower two, in a fresh process).
  assert not {'jit(broadcast_in_dim)', 'jit(convert_element_type)'} & set(
      lowered), lowered
  for layer in ('conv1', 'bn1', 'conv2', 'bn2', 'fc'):
    assert re.search(rf'│ {layer} ', table), layer
  assert 'flops' in table and '29,034' in table
  # The dense layer's input is the last pool's output, 7x7x32.
  assert 'float32[1,1568]' in table and 'float32[1,14,14,16]' in table
  assert re.search(r'\npool2 +2x2 +2 +7x7x32 +16x16 +4\n?', table), table


def test_the_epoch_bar_counts_steps_on_a_terminal_only():
  def steps():
    with monitor.epoch_progress(2, 3, steps=4) as on_step:
      for _ in range(4):
        time.sleep(0.15)  # tqdm redraws at most every 0.1 s.
        on_step(None)
  shown = _util.on_a_terminal(steps)
  assert 'epoch 2/3' in shown and '4/4' in shown, shown

  def scanned():  # One compiled program reports no steps: no bar at all.
    with monitor.epoch_progress(2, 3, steps=4, per_step=False) as on_step:
      assert on_step is None
  assert not _util.on_a_terminal(scanned)
  log = io.StringIO()
  with contextlib.redirect_stderr(log):
    with monitor.epoch_progress(2, 3, steps=4) as on_step:
      assert on_step is None
  assert not log.getvalue()


def test_a_process_other_than_the_main_one_writes_no_events(tmp_path):
  config = _util.tiny_config()
  events = monitor.Events(str(tmp_path), config, steps_per_epoch=2,
                          learning_rate=lambda step: 0.1, epoch=0,
                          writes=False)
  events.write_epoch(1, {'loss': np.ones(2)}, {'epoch': 1, 'val_loss': 1.0})
  events.write_test(1, {'accuracy': 0.5})
  events.close()
  assert not os.listdir(tmp_path)
