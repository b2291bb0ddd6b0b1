"""The embedded dataset's generator: :mod:`~rdbench.data.synthetic.scenes` (what an image shows
and its captions), :mod:`~rdbench.data.synthetic.render` (how it is drawn) and
:mod:`~rdbench.data.synthetic.generator` (streams of images, and the format-A files on disk).
"""
