"""orbax checkpoints of a training run, for resuming after a kill.

A checkpoint of step `s` (the number of optimiser steps done) holds two
items: 'state', the device arrays (model variables with BatchNorm
statistics and learned quantizer parameters, optimiser state), saved and
restored by orbax with their shardings (each process writes its part on a
pod); and 'meta', JSON: what the run is (its identity, compared before
resuming), the calibration it started from (the plan and initial scales
QatOps is built with), the loss log and the time spent. The data position
and the random keys are functions of (seed, step), so nothing else is
needed to continue exactly where the run stopped.
"""

from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

STATE, META = 'state', 'meta'


def _state_handler() -> ocp.PyTreeCheckpointHandler:
  """orbax's PyTree handler, replicated arrays written by one replica.

  orbax's default on CPU and TPU splits every replicated array into one
  slice per replica (an eager slice per array and device: seconds per save
  for a ResNet on 8 fake CPU devices); the training state is replicated and
  small, so replica 0 writes it whole.
  """
  th = ocp.type_handlers
  registry = th.create_type_handler_registry(
      (int, th.ScalarHandler()), (float, th.ScalarHandler()),
      (np.number, th.ScalarHandler()), (np.ndarray, th.NumpyHandler()),
      (jax.Array, th.ArrayHandler(use_replica_parallel=False)))
  return ocp.PyTreeCheckpointHandler(type_handler_registry=registry)


class Checkpoints:
  """`directory`/<step>/{state,meta}, the newest `keep` of them kept.

  Saves are asynchronous (the device-to-host copy is not): training goes on
  while orbax writes; a save that a kill interrupts is never read back.
  """

  def __init__(self, directory: str, *, keep: int):
    self.directory = directory
    self.manager = ocp.CheckpointManager(
        directory, item_handlers={STATE: _state_handler(),
                                  META: ocp.JsonCheckpointHandler()},
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
    self.manager.save(step, args=ocp.args.Composite(**{
        STATE: ocp.args.PyTreeSave(state),
        META: ocp.args.JsonSave(meta)}))

  def meta(self, step: int) -> dict[str, Any]:
    """The JSON item of `step` (reads no arrays)."""
    out = self.manager.restore(step, args=ocp.args.Composite(**{
        META: ocp.args.JsonRestore()}))
    return out[META]

  def state(self, step: int, like: Any) -> Any:
    """The state of `step`, with the structure, dtypes and shardings of
    `like` (a pytree of jax.Arrays or ShapeDtypeStructs)."""
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                       sharding=x.sharding), like)
    out = self.manager.restore(step, args=ocp.args.Composite(**{
        STATE: ocp.args.PyTreeRestore(
            abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(
                abstract))}))
    return out[STATE]

  def close(self) -> None:
    """Waits for pending saves and releases the manager."""
    self.manager.wait_until_finished()
    self.manager.close()
