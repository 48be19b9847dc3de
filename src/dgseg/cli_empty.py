"""Refusing empty command-line values: ``--out ''`` would otherwise fall back to a default or to the current
folder (``''`` is a relative path to it), ``--split ''`` to the default split, ``--severities ''`` to all five."""

from __future__ import annotations

import argparse

MAY_BE_EMPTY = {("data", "root")}  # `dgseg data check NAME ''`: no root, the synthetic benchmark (documented)


def _actions(parser: argparse.ArgumentParser, path: tuple[str, ...], args: argparse.Namespace):
    """The actions of the (sub)command ``args`` chose, with the command path that reaches them."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = getattr(args, action.dest, None)
            if chosen in action.choices:
                yield from _actions(action.choices[chosen], (*path, chosen), args)
        else:
            yield path, action


def refuse_empty_values(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """ValueError naming the first option (or argument) given as an empty string."""
    for path, action in _actions(parser, (), args):
        value = getattr(args, action.dest, None)
        values = value if isinstance(value, list) else [value]
        if (path[:1] + (action.dest,)) in MAY_BE_EMPTY or not any(v == "" for v in values):
            continue
        if action.const == "":  # the option given without its value (`predict --zip`: the default OUT.zip)
            continue
        name = "/".join(action.option_strings) or action.metavar or action.dest
        about = action.help if action.help and action.help != argparse.SUPPRESS else ""
        raise ValueError(f"{name} '': an empty value; expected a non-empty one" + (f": {about}" if about else ""))
