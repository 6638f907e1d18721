"""One place that knows every pretrained asset humanfix uses: its name, its file and where it goes.

Nothing here touches the network. A missing file is a :class:`UserError` that names the file,
the folder it belongs in and where to get it. ``humanfix doctor`` prints the same table.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from humanfix.errors import UserError

SD15_HUB_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"


def downloads_allowed() -> bool:
    """Whether loading may download: only when the user opts in with ``HF_HUB_OFFLINE=0`` (docs/weights.md).

    Otherwise every hub id is read from the local Hugging Face cache alone (``local_files_only``): a missing model
    is an error in seconds, not minutes of network retries, and nothing is ever downloaded implicitly.
    """
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("0", "false", "no", "off")


def torch_hub_checkpoints() -> Path:
    """torchvision's cache: ``$TORCH_HOME/hub/checkpoints`` (default ``~/.cache/torch/hub/checkpoints``)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def facenet_checkpoints() -> Path:
    """facenet-pytorch's cache: ``$TORCH_HOME/checkpoints`` (it does not use torch.hub's folder)."""
    home = os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch"))
    return Path(home).expanduser() / "checkpoints"


def cleanfid_folder() -> Path:
    """Where clean-fid itself looks for its Inception file (``/tmp`` on Linux and macOS)."""
    return Path("/tmp")


@dataclass(frozen=True)
class Asset:
    """A pretrained file: ``key`` names it in errors and in ``doctor``; ``folder()`` is where it belongs."""

    key: str
    description: str
    filename: str
    url: str
    folder_fn: object  # () -> Path
    flag: str = ""  # the option that passes another path to the file

    def folder(self) -> Path:
        return self.folder_fn()  # type: ignore[operator]

    def path(self) -> Path:
        return self.folder() / self.filename

    def require(self, explicit: str | Path | None = None) -> Path:
        """The asset's file (``explicit`` if given), or a clear error saying where to put it."""
        path = Path(explicit).expanduser() if explicit else self.path()
        if path.is_file():
            return path
        raise UserError(
            f"missing {self.description}: {path} not found. Download {self.url} and place it at {self.path()}"
            + (f" (or pass its path with {self.flag})" if explicit is None and self.flag else "")
        )


VGG16 = Asset(
    key="vgg16",
    description="VGG16 ImageNet weights for LPIPS",
    filename="vgg16-397923af.pth",
    url="https://download.pytorch.org/models/vgg16-397923af.pth",
    folder_fn=torch_hub_checkpoints,
    flag="train --vgg-weights",
)
FACENET_VGGFACE2 = Asset(
    key="facenet-vggface2",
    description="InceptionResnetV1 VGGFace2 weights for the face loss",
    filename="20180402-114759-vggface2.pt",
    url="https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180402-114759-vggface2.pt",
    folder_fn=facenet_checkpoints,
    flag="train --facenet-weights",
)
INCEPTION_FID = Asset(
    key="inception-fid",
    description="clean-fid's Inception weights for FID/KID",
    filename="inception-2015-12-05.pt",
    url="https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt",
    folder_fn=cleanfid_folder,
    flag="evaluate --inception-weights",
)
FILE_ASSETS = (VGG16, FACENET_VGGFACE2, INCEPTION_FID)
TRAINING_ASSETS = (VGG16, FACENET_VGGFACE2)  # what the default objective (λ1, λ2 > 0) needs; doctor fails without


def lpips_heads_path() -> Path:
    """The LPIPS linear heads ship inside the ``lpips`` package (no download)."""
    import lpips

    return Path(lpips.__file__).parent / "weights" / "v0.1" / "vgg.pth"


# A hub id as the Hub spells them: "name" or "owner/name" (letters, digits, '-', '_', '.').
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")


@dataclass(frozen=True)
class HubModel:
    """A transformers checkpoint: a hub id found in the local Hugging Face cache, or a local folder."""

    description: str
    hub_id: str  # the default checkpoint
    flag: str  # the option that names another one

    @staticmethod
    def _folder(name: str) -> Path | None:
        """``name`` as a local folder: an existing folder, or anything that cannot be a hub id."""
        path = Path(name).expanduser()
        return path if path.is_dir() or not _HUB_ID.match(name) else None

    def location(self, name: str | None = None) -> tuple[bool, str]:
        """Whether ``name`` (default ``hub_id``) is here, and the folder where it is or belongs."""
        name = name or self.hub_id
        folder = self._folder(name)
        if folder is not None:
            return (folder / "config.json").is_file(), str(folder)
        from huggingface_hub import constants, try_to_load_from_cache

        found = try_to_load_from_cache(name, "config.json")
        cache = Path(constants.HF_HUB_CACHE) / f"models--{name.replace('/', '--')}"
        return isinstance(found, str), str(cache)

    def require(self, name: str | None = None) -> str:
        """What ``from_pretrained(..., local_files_only=True)`` should load; one clear line when it is not here."""
        name = name or self.hub_id
        folder = self._folder(name)
        if folder is not None:
            if (folder / "config.json").is_file():
                return str(folder)
            what = "has no config.json (not a transformers checkpoint)" if folder.is_dir() else "not found"
            raise UserError(f"{self.description}: folder {folder} {what}")
        present, where = self.location(name)
        if present:
            return name
        raise UserError(
            f"missing {self.description} {name!r}: not in the Hugging Face cache ({where}). "
            f"Download it with `hf download {name}`, or pass {self.flag} FOLDER"
        )


POSE_DETECTOR = HubModel(
    description="RT-DETR person detector for evaluate --pose",
    hub_id="PekingU/rtdetr_r50vd_coco_o365",
    flag="--pose-detector",
)
POSE_ESTIMATOR = HubModel(
    description="ViTPose keypoint estimator for evaluate --pose",
    hub_id="usyd-community/vitpose-base-simple",
    flag="--pose-estimator",
)
HUB_MODELS = (POSE_DETECTOR, POSE_ESTIMATOR)


def sd15_location(model: str = SD15_HUB_ID) -> tuple[bool, str]:
    """Whether ``model`` (hub id or folder) is present locally, and the folder where it is or belongs."""
    if Path(model).expanduser().exists():
        path = Path(model).expanduser()
        return (path / "model_index.json").is_file() or path.is_file(), str(path)
    from huggingface_hub import constants, try_to_load_from_cache

    found = try_to_load_from_cache(model, "model_index.json")
    cache = Path(constants.HF_HUB_CACHE) / f"models--{model.replace('/', '--')}"
    return isinstance(found, str), str(cache)
