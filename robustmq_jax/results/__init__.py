"""The results store (results.jsonl)."""

from robustmq_jax.results.store import CELL_FIELDS
from robustmq_jax.results.store import cell_id
from robustmq_jax.results.store import cell_key
from robustmq_jax.results.store import CORRUPT_FILE
from robustmq_jax.results.store import KEY_FIELDS
from robustmq_jax.results.store import latest
from robustmq_jax.results.store import merge
from robustmq_jax.results.store import mixed_weights
from robustmq_jax.results.store import read_rows
from robustmq_jax.results.store import RESULTS_FILE
from robustmq_jax.results.store import ResultStore
