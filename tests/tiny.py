"""The tiny setup the end-to-end tests run suites on: tiny-rs pre-trained for 3 steps, a
synthetic set of 12/6/6 images under ``{root}``, one epoch, small batches.

``TINY_DEFAULTS`` is the body of a suite's ``defaults:`` as a ``str.format`` template (braces of
the YAML doubled, ``{root}`` to fill), so a test adds its own lines and runs around it.
"""

TINY_DEFAULTS = """\
  backbone: {{name: backbone/tiny-rs, steps: 3, source_images: 32, batch_size: 16}}
  dataset: {{name: dataset/synthetic-rs, train: 12, val: 6, test: 6, root: {root}}}
  optimizer: {{name: optimizer/adamw, lr: 1.0e-3}}
  trainer: {{max_epochs: 1, enable_progress_bar: false}}
  data: {{batch_size: 8, eval_batch_size: 16}}
"""
