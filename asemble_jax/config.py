"""Experiment configs: loading a config or grid file, its typed ARG, and strict overrides of its fields.

One way to do each, for every script, grid and test:
- `load_config("ablations/base.py:model=resnet50,seed=1")` runs the file's get_config(ARG);
- a config or grid file reads its ARG with `parse_arg(arg, model="asemblenet", seed=0, ...)`: each value takes the
  type of its default (as big_vision's parse_arg does), and a key that the file does not declare is refused;
- `apply_overrides(config, {"total_steps": "20", "data.augment": False})` sets existing dotted fields only; a value
  given as text (from the command line) is read as the field's type, so `--config.total_steps=2e1` is an error
  rather than a float where an int belongs;
- `config_flags(argv)` takes the `--config.FIELD=VALUE` flags out of a command line, and `typed_overrides` reads
  them as their fields' types where a record must keep the typed values.
"""
from __future__ import annotations

import importlib.util
import os
from typing import Any, Mapping, Sequence

import ml_collections

from asemble_jax.errors import UserError

_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")
CONFIG_FLAG = "--config."


class ConfigError(UserError, ValueError):
    """A config file, ARG or override that cannot be used."""


def parse_value(text: str, like: Any, where: str) -> Any:
    """`text` read as the type of `like` (bool, int, float or str); ConfigError naming `where` otherwise."""
    if isinstance(like, bool):
        if text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
        raise ConfigError(f"{where}={text!r}: expected true or false")
    for kind in (int, float):
        if isinstance(like, kind):
            try:
                return kind(text)
            except ValueError:
                raise ConfigError(f"{where}={text!r}: expected {'a whole number' if kind is int else 'a number'}"
                                  ) from None
    if like is None or isinstance(like, str):
        return text
    raise ConfigError(f"{where} holds a {type(like).__name__}, which cannot be given as text")


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
    """A config or grid file's ARG, "key=value,key=value", over typed `defaults`; unknown keys are refused."""
    fields = dict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in defaults:
            raise ConfigError(f"argument {item!r} is not one of {', '.join(k + '=...' for k in defaults)}")
        fields[key] = parse_value(value, defaults[key], key)
    return ml_collections.ConfigDict(fields)


def load_module(path: str):
    """Executes a Python file that is not part of a package (a config or grid file) and returns it as a module."""
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: no such file")
    module_spec = importlib.util.spec_from_file_location(f"_loaded_{abs(hash(os.path.abspath(path)))}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def load_config(spec: str) -> ml_collections.ConfigDict:
    """The config of "path/to/file.py[:ARG]": the file's get_config(ARG)."""
    path, _, arg = spec.partition(":")
    module = load_module(path)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{path}: a config file defines get_config(arg) -> ConfigDict")
    return module.get_config(arg or None)


def apply_overrides(config: ml_collections.ConfigDict, overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """Sets dotted fields of `config` in place (and returns it). Unlike ConfigDict.update_from_flattened_dict, a
    field that does not exist is an error: a typo would otherwise train the default silently."""
    for key, value in overrides.items():
        target = config
        *parents, leaf = key.split(".")
        for parent in parents:
            if parent not in target or not isinstance(target[parent], ml_collections.ConfigDict):
                raise ConfigError(f"config has no field {key!r}")
            target = target[parent]
        if leaf not in target or isinstance(target[leaf], ml_collections.ConfigDict):
            raise ConfigError(f"config has no field {key!r}")
        if isinstance(value, str):
            value = parse_value(value, target[leaf], key)
        try:
            target[leaf] = value
        except TypeError as error:
            raise ConfigError(f"config field {key}: {error}") from None
    return config


def typed_overrides(config: ml_collections.ConfigDict, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`overrides` with every text value read as the type of its field in `config` (checked as apply_overrides
    checks it), for records that must hold what the run used (a grid's cells), not what was typed."""
    applied = apply_overrides(ml_collections.ConfigDict(config.to_dict()), overrides)
    return {key: applied[key] for key in overrides}


def config_flags(argv: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """(the other arguments, {field: text}) of a command line's `--config.FIELD=VALUE` flags."""
    rest, overrides = [], {}
    for item in argv:
        if item.startswith(CONFIG_FLAG):
            key, sep, value = item[len(CONFIG_FLAG):].partition("=")
            if not sep or not key:
                raise ConfigError(f"{item!r}: config overrides look like --config.field.name=value")
            overrides[key] = value
        else:
            rest.append(item)
    return rest, overrides
