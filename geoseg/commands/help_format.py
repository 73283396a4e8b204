"""How ``geoseg --help`` writes parameters: flags as flags, list parameters with one value's type,
a required argument's usage as the docs write it (typer 0.29's own help says ``<bool>``,
``<list[str]>`` and ``{INPUT}...``)."""
from __future__ import annotations

import re
from typing import Any

from typer.core import TyperArgument, TyperCommand


def one_value_type(shown: str) -> str:
    """``<str>`` from typer's ``<list[str]>``: the type of one value of a list parameter."""
    if shown.startswith("<list[") and shown.endswith("]>"):
        return f"<{shown[len('<list['):-len(']>')].lower()}>"  # as '<path>' alone
    return shown


class ManyValuedArgument(TyperArgument):
    """A ``nargs=-1`` argument given a metavar, shown in ``--help`` as ``INPUT...  <str>``, not
    typer 0.29's ``INPUT  <list[str]>`` (a Python type, and no sign that several may be given).

    Only its help changes: errors still name it ``'INPUT'`` and the usage line ``INPUT...``.
    ``FlagsShownAsFlags`` turns a command's list arguments into this class."""

    @property
    def display_name_raw(self) -> str:  # typer's help panel writes an argument by this name alone
        return f"{self._plain_name()}..."

    def _plain_name(self) -> str:
        return self.metavar if self.metavar is not None else str(self.name)

    def get_error_hint(self, ctx: Any = None) -> str:
        return f"'{self._plain_name()}'"

    def _usage_display_name(self) -> str:
        name = self._plain_name()
        return f"{{{name}}}..." if self.required else f"[{name}]..."

    def display_type_rich(self, ctx: Any) -> str | None:
        return one_value_type(self.display_type(ctx))


class FlagsShownAsFlags:
    """Help that shows a flag as a flag: ``--regularize``, not ``--regularize <bool>``, and a
    repeatable option or argument with the type of one value: ``--model <str>``, ``INPUT...
    <str>``, not ``<list[str]>``.

    Why: typer's help (0.29) gives every option a type column, flags ``<bool>``; users read it as
    a value to give (``--regularize true``), and the word became an INPUT. Mixed into the app's
    group and every command (``GeosegCommand``), so each ``--help`` shows the same."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if type(param) is TyperArgument and param.nargs != 1:
                param.__class__ = ManyValuedArgument  # the same argument, its help as one value's
            if getattr(param, "param_type_name", "") != "option" or param.metavar is not None:
                continue
            if param.is_flag:
                param.metavar = ""  # what the help shows as its type: nothing
            elif param.multiple and callable(getattr(param, "display_type", None)):
                shown = param.display_type(ctx)
                if shown != one_value_type(shown):
                    param.metavar = one_value_type(shown)
        return params


class GeosegCommand(FlagsShownAsFlags, TyperCommand):
    """A ``geoseg`` sub-command: typer's, its help showing flags as flags and a required argument
    as the docs write it."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        """``INPUT...``, not typer 0.29's ``{INPUT}...``: braces read as a choice of values (and a
        user copying the usage line types them)."""
        return [re.sub(r"^\{(.+)\}(\.\.\.)?$", r"\1\2", piece) for piece in super().collect_usage_pieces(ctx)]
