"""Command-line helpers shared by the Hydra entry points: where the configs are, composing one
task by name, and one-line errors for bad overrides.

`config_dir()` finds tempo's config tree both in a checkout (top-level `conf/`, editable
install or `python -m tempo.train`) and in an installed wheel (shipped as `tempo/conf`).

Hydra reports a bad override (unknown option, unknown key, syntax) in several lines plus a hint
about HYDRA_FULL_ERROR. Entry points call `check_overrides` first: it composes the config once
(a fraction of a second, no heavy work) and turns a composition error into one line naming the
override and what is allowed, with exit code 2.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from tempo.config_error import ConfigError

#: Flags after which Hydra does something other than run one job; those are left to Hydra.
_HYDRA_FLAGS = {"-m", "--multirun", "--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i"}
_HYDRA_FLAGS |= {"--resolve", "--package", "-p", "--shell-completion", "-sc", "--version"}
_HYDRA_FLAGS |= {"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd"}


@functools.cache
def config_dir() -> str:
    """Absolute path of tempo's config tree (the folder holding train.yaml and eval.yaml).

    An installed wheel ships it inside the package as `tempo/conf`; a checkout keeps it at the
    repository root, next to the package. The package's own copy is looked at first, so a
    stray top-level `conf/` in site-packages is never picked up.
    """
    package = Path(__file__).resolve().parent
    candidates = (package / "conf", package.parent / "conf")
    for folder in candidates:
        if (folder / "train.yaml").is_file() and (folder / "eval.yaml").is_file():
            return str(folder)
    looked = " or ".join(str(folder) for folder in candidates)
    raise RuntimeError(f"tempo's configs are missing: no train.yaml and eval.yaml in {looked}")


@contextmanager
def _hydra() -> Iterator[None]:
    """Use the running Hydra (an entry point's job, with its hydra.searchpath) if there is
    one, else tempo's own config tree for the duration."""
    if GlobalHydra.instance().is_initialized():
        yield
        return
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        yield


def _searchpath_override(searchpath: Sequence[str] | None) -> list[str]:
    """`hydra.searchpath=[...]` for an explicit list, else the running job's own (Hydra
    composes each config afresh from its search path; a job's extra entries do not persist
    in the config loader, so they are handed on explicitly)."""
    if searchpath is None:
        searchpath = list(HydraConfig.get().searchpath) if HydraConfig.initialized() else []
    if not searchpath:
        return []
    quoted = [f"'{entry}'" if "'" not in entry else f'"{entry}"' for entry in searchpath]
    return [f"hydra.searchpath=[{','.join(quoted)}]"]


def group_options(group: str, searchpath: Sequence[str] | None = None) -> list[str]:
    """The options of config group `group` (e.g. "task") in every config search path entry:
    tempo's own tree and the `searchpath` folders (default: the running job's
    `hydra.searchpath`)."""
    with _hydra():
        loader = GlobalHydra.instance().config_loader()
        found = loader.get_group_options(group, overrides=_searchpath_override(searchpath))
        return sorted(set(found))


def compose_task(
    name: object,
    overrides: Mapping[str, Any] | DictConfig | None = None,
    key: str = "tasks",
    overrides_key: str | None = None,
    searchpath: Sequence[str] | None = None,
) -> DictConfig:
    """The config of task `name` exactly as `task=<name>` composes it, with `overrides` merged
    on top; not yet instantiated. Its file may sit in tempo's conf/task or in any `searchpath`
    folder (default: the running job's `hydra.searchpath`, so a user's task is found).

    An unknown name raises ConfigError(`key`, name, the options of every search path entry);
    overrides that cannot be merged raise one under `overrides_key` (default
    `task_overrides.<name>`). Keys the task does not take are left to `build`, whose
    ConfigError names them. Works inside a Hydra job and outside one (tempo's own configs).
    """
    extra = _searchpath_override(searchpath)
    with _hydra():
        options = group_options("task", searchpath)
        if not isinstance(name, str) or name not in options:
            raise ConfigError(key, name, f"one of {', '.join(options)}")
        composed = compose(config_name=None, overrides=[*extra, f"+task={name}"])
    if not isinstance(composed.get("task"), DictConfig):
        raise ConfigError(key, name, "a task config in the task package (no @package header)")
    node = OmegaConf.create(OmegaConf.to_container(composed.task, resolve=False))
    if not overrides:
        return node
    try:
        return OmegaConf.merge(node, overrides)
    except OmegaConfBaseException as err:
        reason = str(err).splitlines()[0]
        where = overrides_key or f"task_overrides.{name}"
        raise ConfigError(where, overrides, f"values that fit task {name!r} ({reason})") from None


def _unparsable(args: Sequence[str]) -> str | None:
    parser = OverridesParser.create()
    for arg in args:
        try:
            parser.parse_override(arg)
        except HydraException:
            return arg
    return None


def describe_composition_error(err: Exception, args: Sequence[str] = ()) -> str:
    """One line for a Hydra composition error."""
    if isinstance(err, OverrideParseException):
        bad = _unparsable(args)
        reason = str(err).splitlines()[0]
        return f"{bad!r} is not an override key=value ({reason}; quote values with brackets)"
    match = re.match(r"Could not override '([^']+)'", str(err))
    if match:
        key = match[1]
        group, _, name = key.rpartition(".")
        return (
            f"{key} does not exist: allowed the keys already in {group or 'the config'} "
            f"(add a new one with +{key}=...)"
        )
    if isinstance(err, MissingConfigException) and err.options:
        missing = err.missing_cfg_file or ""
        group, _, option = missing.rpartition("/")
        return (
            f"{group}={option!s} is invalid: allowed one of {', '.join(sorted(err.options))}"
            if group
            else f"{missing}: not found"
        )
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = lines[0] if lines else type(err).__name__
    hint = next((line for line in lines[1:] if line.startswith("To append")), None)
    return f"{text} {hint}" if hint else text


def check_overrides(config_dir: str, config_name: str, prog: str, argv: Sequence[str]) -> None:
    """Compose `config_name` with the command line's overrides; exit 2 with one line on error.

    Sweeps (`-m`) and Hydra's own flags are passed through unchecked: Hydra composes each
    sweep job itself.
    """
    args = list(argv)
    if any(arg in _HYDRA_FLAGS or arg.startswith("--") for arg in args):
        return
    try:
        with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
            compose(config_name, overrides=args, return_hydra_config=True)
    except HydraException as err:
        print(f"{prog}: invalid override: {describe_composition_error(err, args)}", file=sys.stderr)
        sys.exit(2)


def build(key: str, node: DictConfig) -> Any:
    """Instantiate one config group; a bad value becomes a ConfigError naming `key.field`."""
    try:
        return hydra.utils.instantiate(node, _convert_="all")
    except MissingMandatoryValue as err:
        field = getattr(err, "full_key", None) or key
        raise ConfigError(str(field), "???", "a value: it has no default, set it") from None
    except Exception as err:  # Hydra wraps constructor errors; find ours in the chain
        cause: BaseException | None = err
        while cause is not None and not isinstance(cause, (ConfigError, TypeError)):
            cause = cause.__cause__ or cause.__context__
        if isinstance(cause, ConfigError):
            raise ConfigError(f"{key}.{cause.key}", cause.value, cause.allowed) from None
        if isinstance(cause, TypeError) and "unexpected keyword argument" in str(cause):
            name = str(cause).rsplit("'", 2)[-2] if "'" in str(cause) else "?"
            target = node.get("_target_", key)
            raise ConfigError(f"{key}.{name}", node.get(name), f"keys of {target}") from None
        raise


def build_extra_task(
    name: str, node: DictConfig, given: object, key: str, list_key: str = "eval.tasks"
) -> object:
    """Task `name` of the task list `list_key` (`eval.tasks`, tempo-eval's `tasks`), built from
    `node`. A bad value the user set in `key` (the task's overrides, e.g.
    `eval.task_overrides.<name>`) is named there; one of the task's own config, which the
    user never wrote, is reported under `list_key`, with the override that would change it."""
    try:
        return build(key, node)
    except ConfigError as err:
        field = err.key.removeprefix(f"{key}.")
        if field != err.key and _holds(given, field.split(".")):
            raise
        raise ConfigError(
            list_key,
            name,
            f"a task whose config works (its {field}={err.value!r} is invalid: allowed "
            f"{err.allowed}; change it with +{key}.{field}=...)",
        ) from None


def _holds(mapping: object, path: list[str]) -> bool:
    """Whether nested `mapping` has a value at `path` (a key's `[i]` index is ignored)."""
    for part in path:
        part = part.split("[", 1)[0]
        if not hasattr(mapping, "get") or part not in mapping:
            return False
        mapping = mapping[part]
    return True


class SweepReport(Callback):
    """Hydra callback for `-m` sweeps.

    Before any job starts (`on_multirun_start`): every sweep point is composed, as Hydra's
    sweeper would compose it, and the first that does not compose (e.g. `method=fixed,foo`)
    ends the sweep in one line naming it and what is allowed, exit code 2. Hydra composes every
    point before it launches any (so one bad choice cannot fail only its own job); doing the
    same check here first gives one line instead of Hydra's error page. For a local launcher
    (anything but submitit's) it also sets `tempo.runner.ISOLATE_ENV`, so each job trains in a
    child process of its worker and a job killed by a signal (the out-of-memory killer) fails
    alone instead of taking the joblib sweep down.

    At the end (`on_multirun_end`): one line counting finished and failed jobs (from each
    job's `summary.json`), and exit code 1 if any failed. Jobs record a failure instead of
    raising, so one bad job never stops a launcher from finishing the others."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        bad = self._first_bad_point(config)
        if bad is not None:
            print(f"tempo: invalid sweep: {bad}; no job was started", file=sys.stderr)
            sys.exit(2)
        target = str(OmegaConf.select(config, "hydra.launcher._target_", default="") or "")
        if "submitit" not in target:
            import os

            from tempo.runner import ISOLATE_ENV

            os.environ[ISOLATE_ENV] = "1"

    @staticmethod
    def _first_bad_point(config: DictConfig) -> str | None:
        """One line for the first sweep point that does not compose, else None."""
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

        params = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
        args = [f"{key}={value}" for key, value in params.items()]
        args += list(OmegaConf.to_container(config.hydra.overrides.task, resolve=False))
        loader = GlobalHydra.instance().config_loader()
        try:
            parsed = OverridesParser.create(config_loader=loader).parse_overrides(args)
            points = BasicSweeper.split_arguments(parsed, None)[0]
        except HydraException as err:
            return describe_composition_error(err, args)
        for point in points:
            try:
                loader.load_sweep_config(config, list(point))
            except HydraException as err:
                return describe_composition_error(err, point)
        return None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        statuses: dict[str, list[str]] = {}
        for summary in sorted(sweep_dir.glob("*/summary.json")):
            try:
                status = json.loads(summary.read_text()).get("status", "unknown")
            except (OSError, ValueError):
                status = "unreadable"
            statuses.setdefault(status, []).append(summary.parent.name)
        counts = ", ".join(f"{len(jobs)} {status}" for status, jobs in sorted(statuses.items()))
        print(f"tempo: sweep {sweep_dir}: {counts or 'no job summaries'}", file=sys.stderr)
        failed = statuses.get("failed", [])
        if failed:
            print(f"tempo: failed jobs: {', '.join(failed)}", file=sys.stderr)
            sys.exit(1)
