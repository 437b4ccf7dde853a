"""The clean-accuracy section of the report."""

from typing import Any, Mapping, Sequence

from robustmq_jax.reporting import format as fmt


def float_reference(rows: Sequence[Mapping[str, Any]], row: Mapping[str, Any]
                    ) -> Mapping[str, Any] | None:
  """The float (fp32, method float) row of `row`'s dataset, model and cell."""
  for r in rows:
    if (r['precision'] == 'fp32' and r.get('method', 'float') == 'float' and
        r.get('dataset') == row.get('dataset') and r['model'] == row['model']
        and r['suite'] == row['suite'] and r['noise'] == row['noise'] and
        fmt.params_key(r.get('params')) == fmt.params_key(row.get('params'))):
      return r
  return None


def section(rows: Sequence[Mapping[str, Any]]) -> fmt.Section | None:
  """Clean top-1 accuracy per model and precision (None without rows)."""
  rows = [r for r in rows if r.get('suite') == 'clean']
  if not rows:
    return None
  rows = sorted(rows, key=lambda r: (r.get('dataset', ''), r['model'],
                                     fmt.precision_order(r['precision']),
                                     r.get('method', '')))
  body = []
  for r in rows:
    ref = float_reference(rows, r)
    body.append([
        r['model'], r['precision'], r.get('method', ''), str(r['n']),
        fmt.pct(r['accuracy']), fmt.wilson_pct(r['accuracy'], r['n']),
        fmt.pct(r.get('accuracy_int8')),
        fmt.drop(ref['accuracy'], r['accuracy']) if ref else fmt.MISSING])
  text = ('Top-1 accuracy (%) on the clean test examples, with its Wilson '
          '95% interval. "int8" is the real-integer (AQT serving) model; '
          '"drop vs fp32" is the float model\'s accuracy minus this one, in '
          'points (positive: quantization lost accuracy).')
  table = fmt.Table(['model', 'precision', 'method', 'n', 'accuracy %',
                     '95% interval', 'int8 %', 'drop vs fp32'], body)
  return fmt.Section('Clean accuracy', [text, table], 'clean')
