"""Report, CSV and plots from results.jsonl."""

from robustmq_jax.reporting.report import write_report
