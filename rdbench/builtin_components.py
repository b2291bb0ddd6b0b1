"""Imports every module that defines built-in components, so their decorators register them.

The package hands a loader that imports this module to the registry (``rdbench/__init__.py``), which calls it before
its first lookup; the registry itself imports no component (as timm's ``models/__init__.py``
imports its model modules and its ``_registry`` stays a leaf).
"""

import rdbench.adapters.attention  # noqa: F401
import rdbench.adapters.basic  # noqa: F401
import rdbench.adapters.cmaa  # noqa: F401
import rdbench.adapters.interactions  # noqa: F401
import rdbench.adapters.competitors  # noqa: F401
import rdbench.adapters.lora  # noqa: F401
import rdbench.adapters.prompts  # noqa: F401
import rdbench.backbones.base  # noqa: F401
import rdbench.backbones.tiny_rs  # noqa: F401
import rdbench.data.datasets  # noqa: F401  (dataset/synthetic-rs and the folder datasets)
import rdbench.losses.base  # noqa: F401
import rdbench.losses.contrastive  # noqa: F401
import rdbench.losses.dtcl  # noqa: F401
import rdbench.losses.weighting  # noqa: F401
import rdbench.optim  # noqa: F401
import rdbench.transforms  # noqa: F401
import rdbench.training.trackers  # noqa: F401  (the logger kind: Lightning loggers, imported when a run starts)
