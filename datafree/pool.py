"""The synthetic image pool: bounded, one uint8 tensor on the device, mirrored in one file beside the run.

The reference writes every synthesised image as a PNG and never drops one. Here the pool holds at most
``capacity`` images (the oldest go first) as an N×H×W×3 uint8 tensor, which is what the PNGs held. The
file ``pool.u8`` has one fixed slot per image; images added since the last checkpoint travel inside the
checkpoint (a write-ahead journal) and are written to the file only after it, so a kill at any instant
leaves a checkpoint and a file that agree once the journal is replayed.

The same ring, of float32 rows, is CMI's memory bank of synthesised features (``bank.f32``).

Beside the file, ``pool.owner`` (``bank.owner``) names the run that created it (its folder and a random id
the checkpoint keeps), so a run never resumes on, nor silently starts over, another run's pool in a shared
``--save_dir``.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from dataset.memory import batch_seed, crop_flip, normalise
from helper.checkpoint import atomic_text
from helper.errors import UserError

POOL_FILE = "pool.u8"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class ImagePool:
    """Synthetic images (uint8 NHWC) in a ring of ``capacity`` slots, plus optional fixed images that are
    never dropped (the reference's ``--cmi_init`` pre-inverted set)."""

    def __init__(self, capacity: int, image_shape: tuple[int, ...], device: torch.device, path: Path,
                 dtype: torch.dtype = torch.uint8):
        self.capacity, self.shape, self.device, self.path = capacity, tuple(image_shape), device, Path(path)
        self.images = torch.zeros((capacity, *self.shape), dtype=dtype, device=device)
        self.item_bytes = math.prod(self.shape) * self.images.element_size()
        self.count = 0  # images ever added
        self.journal: list[tuple[int, Tensor]] = []  # (count before, images) added since the last flush
        self.fixed: Tensor | None = None
        self.owner = ""  # the id of the run whose pool this is (see :meth:`create_file`)

    def __len__(self) -> int:
        """Images to draw from: the synthetic ones held plus the fixed ones."""
        return min(self.count, self.capacity) + (0 if self.fixed is None else len(self.fixed))

    def create_file(self, run_folder: str = "") -> None:
        """A fresh (sparse) file with room for every slot, owned by a new id for the run in ``run_folder``."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.owner = uuid.uuid4().hex  # os.urandom: no random stream of the run is drawn from
        atomic_text(owner_file(self.path), json.dumps({"id": self.owner, "run": run_folder}) + "\n")
        with open(self.path, "wb") as handle:
            handle.truncate(self.capacity * self.item_bytes)

    def add(self, images: Tensor) -> None:
        """Append a uint8 NHWC batch (at most ``capacity`` images), dropping the oldest when full."""
        n = images.shape[0]
        slots = (self.count + torch.arange(n, device=self.device)) % self.capacity
        self.images[slots] = images.to(self.device)
        self.journal.append((self.count, images.cpu()))
        self.count += n

    def newest(self, n: int) -> Tensor:
        """The last ``n`` synthetic images added (fewer if the pool holds fewer), oldest first."""
        n = min(n, self.count, self.capacity)
        slots = (self.count - n + torch.arange(n, device=self.device)) % self.capacity
        return self.images[slots]

    def gather(self, index: Tensor) -> Tensor:
        """Images by position in [0, len): the synthetic ones first, then the fixed ones."""
        held = min(self.count, self.capacity)
        if self.fixed is None:
            return self.images[index]
        inside = (index < held)[:, None, None, None]
        return torch.where(inside, self.images[index.clamp(max=max(held - 1, 0))],
                           self.fixed[(index - held).clamp(min=0)])

    # ----- persistence ---------------------------------------------------------------------------
    def state(self) -> dict:
        """What a checkpoint records: the counters and the journal (the images not yet in the file)."""
        return {"capacity": self.capacity, "count": self.count, "shape": list(self.shape), "owner": self.owner,
                "journal": [[start, images] for start, images in self.journal]}

    def flush(self) -> None:
        """Write the journal into the file (after the checkpoint that holds it is on disk), then drop it."""
        self._apply(self.journal)
        self.journal = []

    def _apply(self, journal, capacity: int | None = None) -> None:
        if not journal:
            return
        capacity = capacity or self.capacity
        slots = np.memmap(self.path, dtype=self._np_dtype, mode="r+", shape=(capacity, *self.shape))
        for start, images in journal:
            index = (start + np.arange(images.shape[0])) % capacity
            slots[index] = images.numpy()
        slots.flush()
        with open(self.path, "rb") as handle:
            os.fsync(handle.fileno())
        del slots

    def load(self, state: dict) -> None:
        """Restore from a checkpoint's :meth:`state` and the file, replaying its journal.

        A pool that never dropped an image holds them in slots 0..count-1 whatever its capacity, so it may
        change size here (a finished run extended with more --epochs, whose schedule-bound capacity grows): the
        result is the pool an uninterrupted run of the new length would hold.
        """
        self._check_owner(state.get("owner"))
        self.owner = state.get("owner", "")
        saved = state["capacity"]
        if tuple(state["shape"]) != self.shape:
            raise UserError(f"the checkpoint's images are {state['shape']}, this run's {list(self.shape)}: resume "
                            "with the same --dataset")
        count = state["count"]
        if saved != self.capacity and count > saved:
            raise UserError(f"the checkpoint's image pool ({saved} images) has dropped older ones, so its size "
                            f"cannot change: resume with --pool_size {saved}")
        if saved != self.capacity and count > self.capacity:
            raise UserError(f"this run's pool has room for {self.capacity} images (the least of --pool_size and "
                            f"--epochs x ep_steps/kd_steps x --synthesis_batch_size), the checkpoint's holds {count}: "
                            "resume with the run's own --epochs and --pool_size")
        size, per_image = (self.path.stat().st_size if self.path.is_file() else 0), self.item_bytes
        on_disk = size // per_image if size % per_image == 0 else 0  # a kill mid-resize leaves another size
        if not self.path.is_file() or (on_disk != saved and count > min(on_disk, saved)):
            raise UserError(f"the image pool file {self.path} is missing or truncated: cannot resume "
                            "(the checkpoint keeps only the images added since the file was written)")
        self._apply(state["journal"], on_disk)
        if on_disk != self.capacity:
            with open(self.path, "r+b") as handle:
                handle.truncate(self.capacity * per_image)
        data = np.fromfile(self.path, dtype=self._np_dtype).reshape(self.capacity, *self.shape)
        self.images = torch.from_numpy(data).to(self.device)
        self.count, self.journal = count, []

    def _check_owner(self, owner: str | None) -> None:
        """The file beside the checkpoint's pool must still be that run's (another run may have started over
        in a shared --save_dir with --overwrite)."""
        if owner is None:  # a checkpoint from before pools had owners
            return
        holder = read_owner(self.path)
        if holder is not None and holder.get("id") != owner:
            raise UserError(f"{self.path} now belongs to the run in "
                            f"{holder.get('run') or 'another folder'}: this run's pool is gone and it cannot resume; "
                            "start it over with --overwrite and another --save_dir")

    @property
    def _np_dtype(self) -> np.dtype:
        return self.images[:0].cpu().numpy().dtype

    def load_fixed(self, folder: str | Path) -> None:
        """Every image file under ``folder`` (the reference's ``--cmi_init``), of this pool's size."""
        files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise UserError(f"--cmi_init {folder}: no .png/.jpg images there")
        arrays = []
        for path in files:
            array = np.asarray(Image.open(path).convert("RGB"))
            if array.shape != self.shape:
                raise UserError(f"--cmi_init: {path} is {array.shape[1]}×{array.shape[0]}, the pool's images are "
                                f"{self.shape[1]}×{self.shape[0]}")
            arrays.append(array)
        self.fixed = torch.from_numpy(np.stack(arrays)).to(self.device)


def owner_file(path: Path) -> Path:
    """``pool.owner`` for ``pool.u8``: who created the file."""
    return path.with_suffix(".owner")


def read_owner(path: Path) -> dict | None:
    """What the owner file of the ring file ``path`` says ({'id', 'run'}); {} when it is unreadable, None when
    there is no ring file."""
    if not path.exists():
        return None
    try:
        owner = json.loads(owner_file(path).read_text())
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


def kd_batch(pool: ImagePool, seed: int, round_: int, step: int, batch_size: int, mean: Tensor, std: Tensor,
             channels_last: bool) -> Tensor:
    """Step ``step`` of the distillation after synthesis round ``round_``: a batch of the pool, cropped,
    flipped and normalised on the device, as the reference's loader over its PNG folder gives.

    The reference reshuffles its loader over the whole pool after each round and starts again when it runs
    out; here pass p of round r is a permutation drawn from (seed, r, p), and each batch's crops and flips
    from (seed, r, step), so any step can be redrawn exactly (a resumed run does).
    """
    n = len(pool)
    per_pass = math.ceil(n / batch_size)
    this_pass, within = divmod(step, per_pass)
    generator = torch.Generator(device=pool.device)
    generator.manual_seed(batch_seed(seed, 2, round_, this_pass))
    order = torch.randperm(n, generator=generator, device=pool.device)
    index = order[within * batch_size:(within + 1) * batch_size]
    generator.manual_seed(batch_seed(seed, 3, round_, step))
    padding = pool.shape[0] // 8
    offsets = torch.randint(0, 2 * padding + 1, (index.numel(), 2), generator=generator, device=pool.device)
    flips = torch.rand(index.numel(), generator=generator, device=pool.device) < 0.5
    pixels = crop_flip(pool.gather(index), torch.arange(index.numel(), device=pool.device), offsets, flips, padding)
    return normalise(pixels, mean, std, channels_last)
