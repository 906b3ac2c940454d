"""Checkpoint payloads: what goes into a group's checkpoint (``payload``) and how it comes back
out (``restore``), as plain data for the ``Checkpointer`` the host loop is given (the run
folder's ``runfolder.storage.FileCheckpointer``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from initlab.config import RunConfig, config_digest
from initlab.errors import InitlabError
from initlab.nn.model import Params
from initlab.train.program import TrainState

if TYPE_CHECKING:
    from initlab.train.book import RunBook

CHECKPOINT_FORMAT = 1


class Checkpointer(Protocol):
    """Where a group's checkpoints go (``log.checkpoint_every``): ``save`` gets the whole training
    state as plain data (numpy arrays, lists, dicts, dataclasses); ``load`` returns the last one
    saved, or None to start from step 0."""

    def save(self, payload: dict[str, Any]) -> None: ...
    def load(self) -> dict[str, Any] | None: ...


def payload(
    cfgs: Sequence[RunConfig],
    books: Sequence[RunBook],
    state: TrainState,
    prev_params: Params,
    step: int,
    elapsed: float,
) -> dict[str, Any]:
    """The whole training state of a group at the chunk stop ``step``, as plain data: the device
    state's leaves (params, optimizer state, data order and key, loss scale) and the previous
    log's weights, each run's book and what its sink holds."""
    leaves = [np.asarray(a) for a in jax.tree.leaves(jax.device_get((state, prev_params)))]
    return {
        "format": CHECKPOINT_FORMAT,
        "digests": [config_digest(c) for c in cfgs],
        "step": step,
        "elapsed": elapsed,
        "leaves": leaves,
        "books": [b.snapshot() for b in books],
        "sinks": [b.sink.snapshot() for b in books],
    }


def restore(
    payload: dict[str, Any], cfgs: Sequence[RunConfig], books: Sequence[RunBook], state: TrainState, prev_params: Params
) -> tuple[TrainState, Params, int]:
    """Put a checkpoint back: the device state (into the structure ``state`` and ``prev_params``
    have), the books and the sinks; returns them and the step to continue from."""
    if payload.get("format") != CHECKPOINT_FORMAT or payload.get("digests") != [config_digest(c) for c in cfgs]:
        raise InitlabError(
            "the checkpoint is of another config or initlab version: delete it (initlab run: run "
            "without --resume) to start again"
        )
    template, treedef = jax.tree.flatten((state, prev_params))
    leaves = payload["leaves"]
    if len(leaves) != len(template) or any(a.shape != t.shape for a, t in zip(leaves, template)):
        raise InitlabError("the checkpoint's arrays do not match this config's network: run without --resume")
    restored = jax.tree.unflatten(treedef, [jnp.asarray(a, t.dtype) for a, t in zip(leaves, template)])
    for b, book, held in zip(books, payload["books"], payload["sinks"]):
        b.restore(book, payload["elapsed"])
        b.sink.restore(held)
    return restored[0], restored[1], int(payload["step"])
