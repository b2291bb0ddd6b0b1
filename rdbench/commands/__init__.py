"""Command logic of ``rdbench`` sub-commands that live outside :mod:`rdbench.cli`:
:mod:`~rdbench.commands.data` (``rdbench data verify`` and ``rdbench data overlap``) and
:mod:`~rdbench.commands.verify` (the checks behind ``rdbench data verify``).
"""
