"""The one place rdbench imports open_clip, after making torchvision importable.

Every module that needs open_clip writes ``from rdbench.openclip import open_clip``.
"""

from rdbench._torchvision_compat import ensure_torchvision_importable

ensure_torchvision_importable()

import contextlib  # noqa: E402
import logging  # noqa: E402

import open_clip  # noqa: E402

__all__ = ["open_clip", "create_model"]


class _NoRandomInitNotice(logging.Filter):
    """open_clip warns on the root logger whenever a model is built without pretrained weights;
    rdbench does that on purpose (it loads its own weights right after, or counts parameters)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


def create_model(name: str, pretrained: str | None = None, **kwargs):
    """``open_clip.create_model`` without the notice above when ``pretrained`` is None."""
    quiet = _NoRandomInitNotice()
    root = logging.getLogger()
    handlers = [root, *root.handlers]
    with contextlib.ExitStack() as stack:
        for h in handlers:
            h.addFilter(quiet)
            stack.callback(h.removeFilter, quiet)
        return open_clip.create_model(name, pretrained=pretrained, **kwargs)
