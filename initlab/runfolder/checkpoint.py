"""Training checkpoints: a run's (``checkpoint.pkl`` in its folder) and a sweep group's (in the
output folder's ``.checkpoints/``, its runs' folders being written only when the group ends)."""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from initlab.config import RunConfig, config_digest
from initlab.errors import InitlabError, describe_os_error
from initlab.runfolder.files import CHECKPOINTS_DIR

# A checkpoint file is this header line, then the SHA-256 of the payload in hex and a newline, then
# the payload: a pickle of plain data (numpy arrays, lists, dicts, numbers). The checksum is
# verified before anything is unpickled, so a torn, truncated or bit-flipped file is refused, never
# resumed from. It detects corruption, not forgery: pickle can run code, so resume only from run
# folders you (or initlab) wrote.
CHECKPOINT_MAGIC = b"initlab checkpoint 2\n"


class FileCheckpointer:
    """A training checkpoint (``initlab.train.loop.Checkpointer``) kept in one file, ``path``, written
    through a temporary name, fsync and a rename, so a kill -9 at any moment leaves the previous
    checkpoint or the new one, never a torn file; checked against its SHA-256 before it is read
    (see ``CHECKPOINT_MAGIC``). ``remedy`` ends the message of a checkpoint that cannot be used:
    what the user runs to start again."""

    def __init__(self, path: Path, remedy: str = "--force starts the run again"):
        self.path = Path(path)
        self.remedy = remedy

    def save(self, payload: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
        tmp = self.path.with_name(f".tmp-{self.path.name}-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                f.write(CHECKPOINT_MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n")
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _body(self) -> bytes:
        """The payload's bytes, once its checksum is verified; an InitlabError naming the file otherwise."""
        try:
            data = self.path.read_bytes()
        except OSError as e:
            raise InitlabError(f"{self.path}: cannot be read ({describe_os_error(e)}); {self.remedy}") from None
        if not data.startswith(CHECKPOINT_MAGIC):
            raise InitlabError(
                f"{self.path}: not a checkpoint of this initlab version (its header is missing or "
                f"damaged); nothing was trained; {self.remedy}"
            )
        head_end = len(CHECKPOINT_MAGIC) + 65
        digest, body = data[len(CHECKPOINT_MAGIC) : head_end - 1], data[head_end:]
        if data[head_end - 1 : head_end] != b"\n" or hashlib.sha256(body).hexdigest().encode() != digest:
            raise InitlabError(
                f"{self.path}: corrupted (its SHA-256 does not match its contents); nothing was trained; {self.remedy}"
            )
        return body

    def verify(self) -> None:
        """Raise the InitlabError ``load`` would, without unpickling (before a run folder is claimed)."""
        self._body()

    def load(self) -> dict[str, Any] | None:
        if not self.path.is_file():
            return None
        body = self._body()
        try:
            payload = pickle.loads(body)
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError) as e:
            raise InitlabError(f"{self.path}: cannot be read ({type(e).__name__}: {e}); {self.remedy}") from None
        if not isinstance(payload, dict):
            raise InitlabError(f"{self.path}: not a checkpoint of initlab's; {self.remedy}")
        return payload

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def group_checkpoint_path(cfgs: Sequence[RunConfig]) -> Path:
    """Where a sweep keeps the checkpoint of a group of runs in training (their run folders exist
    only once the group has finished): ``<log.out>/.checkpoints/<16 hex digits>.pkl``, named by
    the members' config digests, so a group resumes only into the same runs."""
    digest = hashlib.sha256("\n".join(config_digest(c) for c in cfgs).encode()).hexdigest()[:16]
    return Path(cfgs[0].log.out) / CHECKPOINTS_DIR / f"{digest}.pkl"
