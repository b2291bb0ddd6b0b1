"""Imports every module that defines built-in components, so their decorators register them."""

import rdbench.adapters.basic  # noqa: F401
import rdbench.backbones.base  # noqa: F401
import rdbench.backbones.tiny_rs  # noqa: F401
import rdbench.data.datasets  # noqa: F401
import rdbench.losses.base  # noqa: F401
import rdbench.losses.contrastive  # noqa: F401
import rdbench.optim  # noqa: F401
