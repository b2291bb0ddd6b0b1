"""Checkpoints from the Hugging Face hub: the CLIP weights remote-sensing retrieval papers start from.

GeoRSCLIP (Zhang et al., TGRS 2024) and RemoteCLIP (Liu et al., TGRS 2024) publish open_clip
state dicts on the hub; the backbone presets in ``registry/backbone/`` name each one by its
repository and file (``rdbench list backbone/``). :func:`hub_checkpoint` fetches a file through
``huggingface_hub`` into its cache (``$HF_HUB_CACHE``, by default ``~/.cache/huggingface/hub``),
honouring ``HF_HUB_OFFLINE=1``: a file already cached is used without the network. Every failure
is one line: a file neither cached nor reachable names the file, the command that fetches it
where there is a network, and the setting that points rdbench at a copy placed anywhere
(``--set backbone.pretrained=PATH``); a file whose SHA-256 differs from the one its authors
publish (where they publish one) names both. A state dict of another architecture is refused
by :func:`rdbench.backbones.base.load_state`.
"""

from __future__ import annotations

from pathlib import Path

from rdbench.cache_files import file_sha256
from rdbench.errors import DataError


def hub_checkpoint(repo: str, filename: str, sha256: str | None = None, revision: str | None = None) -> Path:
    """The local path of ``filename`` in the hub repository ``repo``, fetched into the hub cache
    if it is not there; checked against ``sha256`` when given."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    where = f"{repo}/{filename}"
    try:
        path = Path(hf_hub_download(repo_id=repo, filename=filename, revision=revision))
    except LocalEntryNotFoundError:
        offline = " (HF_HUB_OFFLINE is set)" if constants.HF_HUB_OFFLINE else " (the hub cannot be reached)"
        raise DataError(
            f"{where}: backbone checkpoint not in the Hugging Face cache {constants.HF_HUB_CACHE}{offline}; fetch it "
            f"where there is a network (`hf download {repo} {filename}`) and copy the cache, or place the file anywhere "
            "and pass --set backbone.pretrained=PATH"
        ) from None
    except (HfHubHTTPError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{where}: cannot be fetched from the hub ({first})") from None
    check_sha256(path, sha256, where)
    return path


def check_sha256(path: Path, sha256: str | None, what: str) -> None:
    if sha256 is None:
        return
    actual = file_sha256(path)
    if actual != sha256.lower():
        raise DataError(f"{path}: SHA-256 {actual[:16]}... is not the {sha256[:16]}... published for {what}; "
                        "the file is damaged or another one: delete it and fetch it again")
