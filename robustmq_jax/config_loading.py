"""Loading a config file and applying `--config.x=y` overrides.

`--config=configs/vit_w4.py:sample` names a Python file defining
`get_config(arg=None)` (and `ARGS`, its args with one line each; `JOB`, the
module that runs it when that is not the main job). Overrides
are typed by the field they replace: `--config.seed=3` must be an integer,
`--config.suites=clean,adversarial` is a list of names, and
`--config.checkpoints.<model>=DIR` adds a checkpoint for any model. Every
failure is a `UserError` naming the flag, the value and what is allowed.
"""

import ast
import glob
import importlib.machinery
import importlib.util
import os
import textwrap
from typing import Any, Mapping, Sequence

import ml_collections

from robustmq_jax import config_fields
from robustmq_jax.errors import invalid
from robustmq_jax.errors import UserError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(REPO_ROOT, 'configs')
# Groups whose keys are open: any name may be added from the command line.
OPEN_GROUPS = ('checkpoints',)
MAIN_JOB = 'robustmq_jax.main'
_TRUE = ('true', '1', 'yes', 'on')
_FALSE = ('false', '0', 'no', 'off')


def config_files(job: str | None = None) -> list[str]:
  """The shipped configs (of `job` when given), relative to the repository."""
  files = sorted(os.path.relpath(p, REPO_ROOT)
                 for p in glob.glob(os.path.join(CONFIG_DIR, '*.py')))
  if job is None:
    return files
  return [f for f in files if _job_of_file(f) == job]


def _job_of_file(path: str) -> str:
  # Read, not executed: listing configs must not run them.
  with open(os.path.join(REPO_ROOT, path), encoding='utf-8') as f:
    for node in ast.parse(f.read()).body:
      if (isinstance(node, ast.Assign) and len(node.targets) == 1
          and getattr(node.targets[0], 'id', None) == 'JOB'
          and isinstance(node.value, ast.Constant)):
        return node.value.value
  return MAIN_JOB


def _resolve(path: str) -> str | None:
  for candidate in (path, os.path.join(REPO_ROOT, path)):
    if os.path.isfile(candidate):
      return candidate
  return None


def load_module(path: str, flag: str = '--config') -> Any:
  """Executes a config file; a missing or broken file is a UserError."""
  found = _resolve(path)
  if found is None:
    raise invalid(flag, path, 'a config file, e.g. ' +
                  ', '.join(config_files()))
  name = '_robustmq_config_' + os.path.splitext(os.path.basename(found))[0]
  loader = importlib.machinery.SourceFileLoader(name, found)
  module = importlib.util.module_from_spec(
      importlib.util.spec_from_loader(name, loader))
  try:
    loader.exec_module(module)
  except UserError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f'{flag}={path!r} failed to load ({type(e).__name__}: '
                    f'{e}); allowed: a Python file defining get_config(arg).'
                    ) from None
  if not callable(getattr(module, 'get_config', None)):
    raise invalid(flag, path, 'a Python file defining get_config(arg)')
  return module


def job_of(module: Any) -> str:
  """The module that runs a config (`JOB`, default the main job)."""
  return getattr(module, 'JOB', MAIN_JOB)


def load(spec: str, flag: str = '--config',
         job: str | None = None) -> ml_collections.ConfigDict:
  """The config named by 'path[:arg]', unlocked, not yet validated.

  Args:
    spec: 'path[:arg]'.
    flag: the flag named in errors.
    job: when given, the config must be one of this job's (e.g. the QAT
      config is refused by the main job with a sentence naming its job).
  """
  path, sep, arg = spec.rpartition(':') if ':' in spec else (spec, '', '')
  if not sep:
    path, arg = spec, None
  module = load_module(path, flag)
  if job is not None and job_of(module) != job:
    raise UserError(
        f'{flag}={spec!r} is a config of `python -m {job_of(module)}`; '
        f'allowed: a config of `python -m {job}`, e.g. ' +
        ', '.join(config_files(job)) + '.')
  allowed = getattr(module, 'ARGS', None)
  if arg is not None and allowed is not None and arg not in allowed:
    raise invalid(flag, spec, f'{path} with an arg of ' +
                  ', '.join(repr(a) for a in allowed))
  try:
    config = module.get_config(arg)
  except ValueError as e:
    raise UserError(f'{flag}={spec!r}: {e}') from None
  if not isinstance(config, ml_collections.ConfigDict):
    raise invalid(flag, spec, 'a file whose get_config returns a ConfigDict')
  config.unlock()
  return config


def parse_value(field: str, text: str, default: Any) -> Any:
  """The command-line string `text` typed like the field's current value."""
  if isinstance(default, bool):
    low = text.strip().lower()
    if low in _TRUE + _FALSE:
      return low in _TRUE
    raise invalid(field, text, 'true or false')
  if isinstance(default, int):
    try:
      return int(text)
    except ValueError:
      raise invalid(field, text, 'an integer') from None
  if isinstance(default, float):
    try:
      return float(text)
    except ValueError:
      raise invalid(field, text, 'a number') from None
  if isinstance(default, str):
    return text
  if isinstance(default, (tuple, list)):
    kinds = {type(d) for d in default}
    element = kinds.pop() if len(kinds) == 1 else None
    if element not in (int, float, str):
      element = None
    return config_fields.parse_list(text, field, element)
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Sequence[tuple[str, str]]) -> None:
  """Sets `config.<dotted>` for every ('dotted', 'text') pair, typed."""
  for dotted, text in overrides:
    field = f'config.{dotted}'
    *parents, last = dotted.split('.')
    node, where = config, 'config'
    for p in parents:
      child = node.get(p) if p in node else None
      if not isinstance(child, (ml_collections.ConfigDict, dict)):
        raise _unknown(field, text, node, where)
      node, where = child, f'{where}.{p}'
    if not last:
      raise invalid(f'--{field}', text, 'a field name after the dot')
    if last not in node:
      if where in tuple(f'config.{g}' for g in OPEN_GROUPS):
        node[last] = text
        continue
      raise _unknown(field, text, node, where)
    current = node[last]
    if isinstance(current, (ml_collections.ConfigDict, dict)):
      first = next(iter(current.keys()), 'x')
      raise invalid(f'--{field}', text,
                    f'sub-fields only, e.g. --{field}.{first}=...')
    node[last] = parse_value(f'--{field}', text, current)


def _unknown(field: str, text: str, node: Mapping[str, Any],
             where: str) -> UserError:
  names = ', '.join(sorted(node.keys()))
  return UserError(f'--{field}={text!r} is not valid: no such field; '
                   f'allowed: the fields of {where}: {names}.')


def split_argv(argv: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
  """Separates `--config.x=y` / `--config.x y` from the other arguments."""
  rest, overrides = [], []
  i = 0
  while i < len(argv):
    arg = argv[i]
    if arg.startswith('--config.'):
      body = arg[len('--config.'):]
      if '=' in body:
        dotted, _, text = body.partition('=')
      elif i + 1 < len(argv) and not argv[i + 1].startswith('--'):
        dotted, text = body, argv[i + 1]
        i += 1
      else:
        raise invalid(arg, None, f'the form {arg}=VALUE')
      overrides.append((dotted, text))
    else:
      rest.append(arg)
    i += 1
  return rest, overrides


def describe_configs(job: str = MAIN_JOB) -> str:
  """`--help`'s list of `job`'s configs with their args, one line each."""
  lines = []
  for rel in config_files(job):
    try:
      module = load_module(rel)
    except UserError as e:
      lines.append(f'  {rel}: {e}')
      continue
    doc = (module.__doc__ or '').strip().splitlines()
    lines.append(textwrap.shorten(f'  {rel}: {doc[0] if doc else ""}', 79,
                                  placeholder='...'))
    for arg, text in (getattr(module, 'ARGS', None) or {}).items():
      lines.append(textwrap.shorten(f'      :{arg:<14} {text}', 79,
                                    placeholder='...'))
  return '\n'.join(lines)
