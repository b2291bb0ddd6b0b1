"""From a caption table to batches: :mod:`~rdbench.data.loading.loaders` (the data module),
:mod:`~rdbench.data.loading.cache` (the decoded-image cache), :mod:`~rdbench.data.loading.images`
(decoding and image hashes) and :mod:`~rdbench.data.loading.overlap` (images shared by two
datasets, and the overlap list that excludes them).
"""
