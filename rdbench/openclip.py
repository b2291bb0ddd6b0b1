"""The one place rdbench imports open_clip, after making torchvision importable.

Every module that needs open_clip writes ``from rdbench.openclip import open_clip``.
"""

from rdbench._torchvision_compat import ensure_torchvision_importable

ensure_torchvision_importable()

import open_clip  # noqa: E402

__all__ = ["open_clip"]
