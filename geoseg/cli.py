"""The ``geoseg`` command line: thin wrappers, one module per command in ``geoseg.commands``."""
from __future__ import annotations

import os
from typing import Any, NoReturn

import typer
from typer.core import TyperGroup

from geoseg import __version__
from geoseg.commands import evaluate, predict, serve, tile, train
from geoseg.commands.gdal_stderr import gdal_stderr_off
from geoseg.commands.help_format import FlagsShownAsFlags, GeosegCommand
from geoseg.commands.termination import TERMINATED_EXIT, Terminated
from geoseg.commands.usage import click_errors as _click_errors


def usage_error_line(error: Any, command_path: str) -> str:
    """``geoseg COMMAND: error: <what is wrong> (see 'geoseg COMMAND --help')``: a click usage error
    (bad option value, missing or unknown option, argument or command) as the one line that the
    commands' own errors use, instead of typer's boxed panel of a usage line, a hint and the message
    wrapped to the terminal's width."""
    message = error.format_message()
    if isinstance(error, typer.BadParameter) and message.endswith(error.message):
        message = message[:len(message) - len(error.message)] + _rejected_value(error)
    message = " ".join(message.split())  # one line, whatever click wrapped or embedded
    if message[:1].isupper() and message[1:2].islower():  # 'No such option' -> 'no such option'
        message = message[0].lower() + message[1:]
    if not isinstance(error, _click_errors.UsageError):
        return f"{command_path}: error: {message}"
    return f"{command_path}: error: {message.removesuffix('.')} (see '{command_path} --help')"


def _rejected_value(error: Any) -> str:
    """A bad value's reason, led by the value: typer's pydantic coercion says 'Input should be a valid
    integer' without the value given (its ValidationError, the cause, keeps it)."""
    cause = error.__cause__
    problems = cause.errors() if callable(getattr(cause, "errors", None)) else []
    if not problems or "input" not in problems[0]:
        return error.message
    reason = str(problems[0].get("msg", error.message)).removeprefix("Value error, ")
    value = repr(problems[0]["input"])
    return reason if value in reason else f"{value}: {reason[:1].lower()}{reason[1:]}"


def empty_value(command: Any, args: list[str]) -> str | None:
    """What is empty among a command's ``args`` (``--out ''``, ``--out=``, an empty INPUT), else None.

    Why: a script's unset variable (``--out "$OUT"``) reached the commands as ``Path('')``, the
    current folder: predict, tile and train wrote there, serve kept its jobs there, and an empty
    INPUT predicted every raster of the current folder."""
    takes_value = {name for param in command.params if not getattr(param, "is_flag", True)
                   for name in param.opts}
    for i, token in enumerate(args):
        if token.startswith("--") and token.endswith("=") and token[:-1] in takes_value:
            return f"empty value for {token[:-1]}"
        if token == "":
            option = args[i - 1] if i > 0 else None
            return f"empty value for {option}" if option in takes_value else "empty argument ''"
    return None


#: the words click reads as a boolean: given after a flag, a user meant them as its value
BOOLEAN_WORDS = frozenset({"true", "false", "yes", "no", "on", "off", "1", "0"})


def _option_names(command: Any) -> tuple[set[str], set[str]]:
    """A command's flag names (``--regularize``, ``--no-buildings``) and those of its options that
    take a value (``--out``, ``-o``)."""
    flags = {name for param in command.params if getattr(param, "is_flag", False)
             for name in [*param.opts, *param.secondary_opts]}
    takes_value = {name for param in command.params
                   if getattr(param, "param_type_name", "") == "option" and not param.is_flag
                   for name in param.opts}
    return flags, takes_value


def value_after_flag(command: Any, args: list[str]) -> str | None:
    """Why a boolean word after a flag (``--regularize true``) is no INPUT, else None.

    Why: a flag takes no value, so click took the word as the next argument, an INPUT, which a
    batch found missing only after every other input had run ('true: input not found'). A file of
    that name is still an input."""
    flags, takes_value = _option_names(command)
    i = 0
    while i < len(args) - 1:
        token, following = args[i], args[i + 1]
        if token == "--":  # what follows is arguments only
            return None
        if token in takes_value:  # '--out true' is --out's value
            i += 2
            continue
        if token in flags and following.lower() in BOOLEAN_WORDS and not os.path.lexists(following):
            return f"{following!r} is not a file: {token} is a flag and takes no value"
        i += 1
    return None


def positional_tokens(command: Any, args: list[str]) -> list[str]:
    """The tokens of ``args`` that click gives ``command``'s arguments: neither an option nor an
    option's value (``--out o``, ``--out=o``); everything after ``--``."""
    _, takes_value = _option_names(command)
    positional: list[str] = []
    i = 0
    while i < len(args):
        token = args[i]
        if token == "--":
            return positional + args[i + 1:]
        if token in takes_value:
            i += 2
            continue
        if not (token.startswith("-") and len(token) > 1):  # '-' alone is an argument (stdin)
            positional.append(token)
        i += 1
    return positional


def boolean_word_input(command: Any, args: list[str]) -> str | None:
    """Why a boolean word given as an input (``geoseg predict true scene.tif``) that names no file
    is no input, else None; for commands taking several inputs (predict's INPUT, tile's SCENE).

    Why: such a word is a flag's value put in the wrong place, as ``value_after_flag``'s, but
    click took it for an input, which a batch found missing only after predicting every other
    input ('true: input not found', exit 1). A file or folder of that name is still an input
    (a word holds no ':' or '/', so it names no URL, virtual path or subdataset)."""
    many = next((param for param in command.params if getattr(param, "param_type_name", "") == "argument"
                 and param.nargs != 1), None)
    if many is None:
        return None
    for token in positional_tokens(command, args):
        if token.lower() in BOOLEAN_WORDS and not os.path.lexists(token):
            name = many.metavar or str(many.name).upper()
            return f"{name} {token!r} names no file or folder: a boolean word is no input (flags take no value)"
    return None


def _exit_on_one_line(error: Any, command_path: str) -> NoReturn:
    ctx = getattr(error, "ctx", None)
    typer.echo(usage_error_line(error, ctx.command_path if ctx is not None else command_path), err=True)
    raise typer.Exit(error.exit_code)


class OneLineErrorsGroup(FlagsShownAsFlags, TyperGroup):
    """The app's group: click's usage errors (exit 2) end in one line on stderr.

    Why: scripts and CI logs read one line per failure, as the commands print their own errors;
    typer's error panel is a usage line, a hint and a box of several lines. ``--help`` keeps
    typer's rich formatting (only errors are handled here). The group's own arguments are parsed
    in ``make_context``; the command name and the subcommand's options in ``invoke``.
    """

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except _click_errors.ClickException as error:
            if type(error).__name__ == "NoArgsIsHelpError":  # a bare `geoseg`: the help, as before
                raise
            _exit_on_one_line(error, info_name or "geoseg")

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        name, command, rest = super().resolve_command(ctx, args)
        if ctx.resilient_parsing or command is None:
            return name, command, rest
        empty = empty_value(command, rest)
        if empty is not None:
            _exit_on_one_line(_click_errors.UsageError(f"{empty} (is a shell variable unset?)"),
                              f"{ctx.command_path} {name}")
        misplaced = value_after_flag(command, rest) or boolean_word_input(command, rest)
        if misplaced is not None:
            _exit_on_one_line(_click_errors.UsageError(misplaced), f"{ctx.command_path} {name}")
        return name, command, rest

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except _click_errors.ClickException as error:
            # an error without a context ('--out requires an argument') belongs to the subcommand
            # being parsed, named once it is resolved
            sub = ctx.invoked_subcommand
            _exit_on_one_line(error, f"{ctx.command_path} {sub}" if sub else ctx.command_path)
        except KeyboardInterrupt as stop:
            # Ctrl-C or SIGTERM outside a command's own handler (predict's imports take seconds; eval has
            # none): typer exited 130 without a word. The commands' handlers say what they keep.
            sub = ctx.invoked_subcommand
            terminated = isinstance(stop, Terminated)
            typer.echo(f"{ctx.command_path}{f' {sub}' if sub else ''}: {'terminated' if terminated else 'interrupted'}",
                       err=True)
            raise typer.Exit(TERMINATED_EXIT if terminated else 130) from None


app = typer.Typer(
    name="geoseg",
    help="Land-cover class maps and building footprints from aerial and satellite GeoTIFFs.",
    cls=OneLineErrorsGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"geoseg {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the geoseg version and exit."),
) -> None:
    """Land-cover class maps and building footprints from aerial and satellite GeoTIFFs."""
    if ctx.invoked_subcommand != "serve":  # the service's log keeps GDAL's lines for its operators
        gdal_stderr_off()  # before the command opens any raster


app.command("tile", cls=GeosegCommand)(tile.tile)
app.command("train", cls=GeosegCommand)(train.train)
app.command("predict", cls=GeosegCommand)(predict.predict)
app.command("eval", cls=GeosegCommand)(evaluate.evaluate)
app.command("serve", cls=GeosegCommand)(serve.serve)

if __name__ == "__main__":  # pragma: no cover
    app(prog_name="geoseg")  # `python -m geoseg.cli`: errors say 'geoseg COMMAND', as the console script's
