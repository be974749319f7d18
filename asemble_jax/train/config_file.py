"""Loads an experiment config the way scripts/train.py's --config flag does: "path/to/file.py[:ARG]"."""
from __future__ import annotations

import importlib.util
import os

import ml_collections


def parse_key_values(arg: str | None, defaults: dict[str, str]) -> dict[str, str]:
    """"key=value,key=value" over `defaults` (the keys a config or grid file accepts); ValueError otherwise."""
    fields = dict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in defaults:
            raise ValueError(f"argument {item!r} is not one of {', '.join(k + '=...' for k in defaults)}")
        fields[key] = value
    return fields


def load_module(path: str):
    """Executes a Python file that is not part of a package (a config or grid file) and returns it as a module."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    module_spec = importlib.util.spec_from_file_location(f"_loaded_{abs(hash(os.path.abspath(path)))}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    path, _, arg = spec.partition(":")
    module = load_module(path)
    return module.get_config(arg) if arg else module.get_config()
