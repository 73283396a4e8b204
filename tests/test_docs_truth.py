"""The user-facing docs against the code, mechanically: what drifts silently when a module, an
option or a setting is added, renamed or removed without its documentation following."""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import typer

from geoseg.cli import app

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
COMMANDS = {name: command for name, command in typer.main.get_command(app).commands.items()}
#: where each command's options are documented
COMMAND_DOC = {"predict": "predict.md", "eval": "predict.md", "tile": "tiling.md", "train": "models.md",
               "serve": "service.md"}


def options_of(command: str) -> set[str]:
    params = COMMANDS[command].params
    return {o for p in params for o in (*p.opts, *p.secondary_opts) if o.startswith("--")} | {"--help"}


def mentions(text: str, word: str) -> bool:
    return re.search(re.escape(word) + r"(?![\w-])", text) is not None


def test_every_module_is_in_the_architecture_map():
    """tiles/classes.py, tiles/qml.py and geoseg/commands/outdir.py were in no table. A module of a
    sub-package may be named by its file name on a line that names its folder."""
    text = (DOCS / "ARCHITECTURE.md").read_text()
    lines = text.splitlines()
    missing = []
    for package in ("tiles", "geoseg", "api"):
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if "weights" in path.parts or (path.name == "__init__.py" and rel != "tiles/__init__.py"):
                continue
            folder = rel.rsplit("/", 1)[0] + "/"
            if mentions(text, rel) or (folder.count("/") > 1 and any(
                    folder in line and mentions(line, f"`{path.name}`") for line in lines)):
                continue
            missing.append(rel)
    assert not missing, f"docs/ARCHITECTURE.md does not say what these modules do: {missing}"


def test_every_variable_the_service_reads_is_in_service_md():
    read = {v for path in (REPO / "api").rglob("*.py") for v in re.findall(r"GEOSEG_[A-Z_]+[A-Z]", path.read_text())}
    text = (DOCS / "service.md").read_text()
    assert read >= {"GEOSEG_MAX_QUEUED", "GEOSEG_RETENTION_HOURS", "GEOSEG_CORS_ORIGINS"}
    assert not {v for v in read if not mentions(text, v)}


@pytest.mark.parametrize("command", sorted(COMMAND_DOC))
def test_every_option_is_documented(command):
    """``geoseg serve --sync-max-pixels`` and ``--log-level`` were in no doc."""
    text = (DOCS / COMMAND_DOC[command]).read_text()
    assert not {o for o in options_of(command) - {"--help"} if not mentions(text, o)}


def command_lines(text: str) -> list[tuple[str, str]]:
    """``(command, the rest of its line)`` for each ``geoseg COMMAND ...`` shown, continuation lines joined,
    up to a comment, a ``&&`` or the end of inline code."""
    text = re.sub(r"\\\n\s*", " ", text)
    found = re.finditer(r"(?<![\w./-])geoseg (tile|train|predict|eval|serve)\b([^\n`|#]*)", text)
    return [(m.group(1), re.split(r"&&|;", m.group(2))[0]) for m in found]


@pytest.mark.parametrize("doc", ["README.md", *sorted(p.name for p in DOCS.glob("*.md"))])
def test_every_option_shown_exists(doc):
    text = (REPO / doc if doc == "README.md" else DOCS / doc).read_text()
    shown = command_lines(text)
    assert doc != "README.md" or len(shown) > 10
    wrong = {(command, o) for command, rest in shown for o in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", rest)
             if o not in options_of(command)}
    assert not wrong, f"{doc} shows options these commands do not have: {sorted(wrong)}"


@pytest.mark.parametrize("doc", ["README.md", *sorted(p.name for p in DOCS.glob("*.md"))])
def test_code_fences_are_balanced(doc):
    """A stray ``` in docs/tiling.md turned its bullets, the 'Training chips' heading and the chips
    example into one block of code."""
    text = (REPO / doc if doc == "README.md" else DOCS / doc).read_text()
    fences = [line for line in text.splitlines() if line.lstrip().startswith("```")]
    assert len(fences) % 2 == 0
    # an opening fence may name a language; a closing one never does
    assert all(line.strip() == "```" for line in fences[1::2]), doc


@pytest.mark.parametrize("doc", ["README.md", *sorted(p.name for p in DOCS.glob("*.md"))])
def test_a_number_in_brackets_is_the_option_s_default(doc):
    """Synopses write ``[--overlap 64]`` for an option and its default; service.md's ``[--workers 2]``
    read as a default of 2 (it is 1)."""
    text = (REPO / doc if doc == "README.md" else DOCS / doc).read_text()
    wrong = []
    for command, rest in command_lines(text):
        defaults = {o: p.default for p in COMMANDS[command].params for o in p.opts}
        wrong += [(command, o, v, defaults.get(o)) for o, v in re.findall(r"\[(--[a-z-]+) ([0-9.]+)\]", rest)
                  if defaults.get(o) is None or float(defaults[o]) != float(v)]
    assert not wrong


def test_every_variable_the_package_reads_is_documented():
    """GEOSEG_DATA, GEOSEG_CACHE and GEOSEG_CODE_VERSION (read by geoseg/) are in README.md or docs/."""
    read = {v for package in ("geoseg", "tiles") for path in (REPO / package).rglob("*.py")
            for v in re.findall(r"GEOSEG_[A-Z_]+[A-Z]", path.read_text())}
    text = "\n".join(p.read_text() for p in [REPO / "README.md", *DOCS.glob("*.md")])
    assert {"GEOSEG_DATA", "GEOSEG_CACHE"} <= read
    assert not {v for v in read if not mentions(text, v)}


@pytest.mark.parametrize("doc", ["README.md", *sorted(p.name for p in DOCS.glob("*.md"))])
def test_every_file_the_docs_name_exists(doc):
    """A module renamed or removed leaves its row naming a file that is not there."""
    text = (REPO / doc if doc == "README.md" else DOCS / doc).read_text()
    named = set(re.findall(r"(?<![\w/.])((?:tiles|geoseg|api|bench|scripts|tests)/[\w/]+\.(?:py|json|typed|sh))", text))
    assert not sorted(p for p in named if not (REPO / p).exists())


def test_every_openapi_operation_id_is_in_service_md(tmp_path):
    """service.md listed the operation ids a generated client gets as methods; the tile routes'
    ``get_tilejson`` and ``get_tile`` were missing from the list."""
    from api.app import create_app
    from api.settings import Settings

    schema = create_app(Settings(data_dir=tmp_path)).openapi()  # no lifespan: nothing started
    ids = {op["operationId"] for ops in schema["paths"].values() for op in ops.values()}
    text = (DOCS / "service.md").read_text()
    assert len(ids) >= 10 and not {i for i in ids if f"`{i}`" not in text}


def option_value(rest: str, option: str) -> str | None:
    """The value ``option`` takes in the rest of a command line shown (``--out models/``), else None."""
    words = shlex.split(rest)
    return next((words[i + 1] for i, w in enumerate(words[:-1]) if w == option), None)


@pytest.mark.parametrize("doc", ["README.md", "service.md"])
def test_the_models_a_doc_trains_can_be_served_as_it_shows(doc):
    """README trained ``geoseg train buildings --out models/`` without ``--name`` (a card called
    ``buildings-u2net``, as the shipped teacher) and then showed ``geoseg serve --models models/``,
    which refuses to start: "two models are named 'buildings-u2net'". Each model trained into a
    folder the doc serves (directly or one sub-folder down, as ``--models`` reads) needs a name of
    its own."""
    from geoseg.card import DEFAULT_NAMES
    from geoseg.paths import weights_dir

    text = (REPO / doc if doc == "README.md" else DOCS / doc).read_text()
    shown = command_lines(text)
    served = {Path(d) for command, rest in shown if command == "serve" and (d := option_value(rest, "--models"))}
    assert served, f"{doc} no longer serves a models folder: drop it from this test"
    names = []
    for command, rest in shown:
        out = option_value(rest, "--out")
        if command == "train" and out and {Path(out), Path(out).parent} & served:
            names.append(option_value(rest, "--name") or DEFAULT_NAMES[shlex.split(rest)[0]])
    shipped = [json.loads(p.read_text())["name"] for p in weights_dir().glob("*.json")]
    assert names and not {n for n in names if n in shipped or names.count(n) > 1}


def heading_anchors(text: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown text (lower case, punctuation but ``-``
    and ``_`` dropped, spaces to ``-``, ``-1``, ``-2`` after a repeat); lines in code blocks are no headings."""
    anchors: set[str] = set()
    in_code = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
        elif not in_code and (m := re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)):
            slug = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
            anchor, n = slug, 0
            while anchor in anchors:
                n += 1
                anchor = f"{slug}-{n}"
            anchors.add(anchor)
    return anchors


@pytest.mark.parametrize("doc", ["README.md", *sorted(p.name for p in DOCS.glob("*.md"))])
def test_every_link_leads_somewhere(doc):
    """A relative link names a file that exists, and its ``#anchor`` a heading of that file: a
    heading reworded (README links to ``predict.md#int8-runtime---runtime-int8-cpu-opt-in`` and
    ``service.md#your-own-models``) left the link landing at the top of the page."""
    path = REPO / doc if doc == "README.md" else DOCS / doc
    links = re.findall(r"\]\(([^)\s]+)\)", path.read_text())
    wrong = []
    for link in links:
        if re.match(r"[a-z]+:", link):
            continue
        target, _, anchor = link.partition("#")
        file = (path.parent / target).resolve() if target else path
        if not file.exists() or (anchor and file.suffix == ".md" and anchor not in heading_anchors(file.read_text())):
            wrong.append(link)
    assert doc != "README.md" or len(links) > 10
    assert not wrong, f"{doc} links to files or headings that do not exist: {wrong}"


def test_heading_anchors_follow_github():
    assert heading_anchors("# geoseg\n## Your own models\n### int8 runtime (`--runtime int8`, CPU, opt-in)\n"
                           "```\n# not a heading\n```\n## Your own models\n") == {
        "geoseg", "your-own-models", "int8-runtime---runtime-int8-cpu-opt-in", "your-own-models-1"}


def test_every_form_field_a_curl_example_sends_is_taken(tmp_path):
    """The ``curl -F field=...`` examples of the docs send fields the route declares: the service
    refuses a field it does not take with a 422, so an example with a renamed field fails as copied."""
    from api.app import create_app
    from api.settings import Settings

    schema = create_app(Settings(data_dir=tmp_path)).openapi()
    components = schema["components"]["schemas"]

    def fields(route: str) -> set[str]:
        ref = schema["paths"][route]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
        return set(components[ref.rsplit("/", 1)[1]]["properties"])

    sent = []  # (route, field) of each curl example that posts a form
    for path in [REPO / "README.md", *DOCS.glob("*.md")]:
        for line in path.read_text().splitlines():
            url = re.search(r"https?://[^/\s]+(/v1/[\w/]+)", line)
            if line.lstrip().startswith("curl ") and url:
                sent += [(url.group(1), field) for field in re.findall(r"-F (\w+)=", line)]
    assert len(sent) >= 5
    assert not [(route, f) for route, f in sent if f not in fields(route)]


@pytest.mark.parametrize("doc", ["README.md", *sorted(p.name for p in DOCS.glob("*.md"))])
def test_every_option_of_a_tool_shown_exists(doc):
    """The ``geoseg`` lines are checked against the CLI; the re-measuring commands of the figures
    (``bench/predict.py --what speed``, ``python -m geoseg.training.refit_gcn --protocol ...``) name
    options of their own scripts, which a rename there leaves wrong: each must be an option string
    its script (or module) declares."""
    text = re.sub(r"\\\n\s*", " ", (REPO / doc if doc == "README.md" else DOCS / doc).read_text())
    wrong = []
    for m in re.finditer(r"(?<![\w/])(bench/\w+\.py|python3? -m (geoseg\.[\w.]+))([^\n`|#;]*)", text):
        script = REPO / (m.group(1) if m.group(2) is None else m.group(2).replace(".", "/") + ".py")
        source = script.read_text() if script.is_file() else ""
        wrong += [(m.group(1), o) for o in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", re.split(r"&&", m.group(3))[0])
                  if not script.is_file() or (f'"{o}"' not in source and f"'{o}'" not in source)]
    assert not wrong, f"{doc} shows options these scripts do not declare: {sorted(set(wrong))}"
