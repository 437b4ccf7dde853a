"""One data-parallel mesh and the single place where host data goes global."""

from typing import Any, Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


def make_mesh(devices=None) -> Mesh:
  """A 1-D ('data',) mesh over all devices (of every process)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over 'data'."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def local_batch_size(mesh: Mesh, global_batch_size: int) -> int:
  """Rows this process must supply so the global batch divides the mesh."""
  n_dev = mesh.devices.size
  if global_batch_size % n_dev:
    raise ValueError(
        f'batch_size={global_batch_size} must be a multiple of the number of '
        f'devices ({n_dev}).')
  return global_batch_size // jax.process_count()


def to_global(mesh: Mesh, batch: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """Host-local numpy arrays -> global jax.Arrays sharded over 'data'.

  Each process passes its own rows; the global array concatenates the
  processes' rows in process order. Values that are already `jax.Array`s
  (global arrays a suite computed on device from an earlier global batch)
  pass through unchanged.
  """
  sharding = data_sharding(mesh)
  return {
      k: v if isinstance(v, jax.Array) else
      jax.make_array_from_process_local_data(sharding, np.asarray(v))
      for k, v in batch.items()
  }


def replicate(mesh: Mesh, tree: Any) -> Any:
  """Places a pytree (e.g. model variables) replicated on every device."""
  return jax.device_put(tree, replicated(mesh))
