"""Annotation-format readers: the five layouts a caption dataset comes in, and its splits.

:mod:`~rdbench.data.formats.karpathy` (format A), :mod:`~rdbench.data.formats.precomp` (B and C),
:mod:`~rdbench.data.formats.csvfiles` (D and E), :mod:`~rdbench.data.formats.layout` (which one a
folder holds) and :mod:`~rdbench.data.formats.splits` (split schemes and exclusions).
"""
