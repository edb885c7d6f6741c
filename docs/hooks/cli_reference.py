"""MkDocs hook: renders ``docs/reference/cli.md`` from ``conf/`` at build time, so the CLI
reference cannot drift from the configs the commands run with.

For each command (``conf/<command>.yaml``) the page lists every key with its default and the
comment that explains it (on the key's line or on the lines just above it), then the config groups
the command composes (``defaults:``) with their options, each option with its own keys. A missing
command config or group folder fails the build. Standard library and PyYAML only; comments are
read line by line, values as written in the file.

Registered in ``mkdocs.yml`` under ``hooks:``. ``python docs/hooks/cli_reference.py`` prints the
page.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

COMMANDS = ("train", "predict", "evaluate", "tune", "export", "convert", "summary", "plan")
PAGE = "reference/cli.md"
# Hydra's own settings (run folder, logging, --help text): not options of the commands.
HYDRA = "hydra"
KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w.-]*)\s*:(?:[ \t]+(?P<rest>.*))?$")
DEFAULT_ITEM = re.compile(
    r"^\s*-\s*(?P<group>[\w/ ]+?)\s*:\s*(?P<option>[^#]*?)\s*(?:#\s*(?P<why>.*))?$"
)
GLOBAL = "@package _global_"


@dataclass
class Entry:
    """One key of a YAML file: its path from the top, its value as written, its comment."""

    path: tuple[str, ...]
    raw: str
    comment: str


@dataclass
class ConfigFile:
    """A config file read for the page: its header comment, usage lines, keys and defaults."""

    header: list[str]
    usage: list[str]
    entries: list[Entry]
    defaults: list[tuple[str, str, str]]  # (group, option, comment)
    is_global: bool
    values: dict


def split_comment(text: str) -> tuple[str, str]:
    """``value  # why`` -> ``("value", "why")``; a ``#`` inside a quoted value is no comment."""
    start = 0
    if text[:1] in ("'", '"'):
        end = text.find(text[0], 1)
        start = end + 1 if end > 0 else len(text)
    for i in range(start, len(text)):
        if text[i] == "#" and (i == 0 or text[i - 1] in " \t"):
            return text[:i].rstrip(), text[i + 1 :].strip()
    return text.rstrip(), ""


def read_config(path: Path) -> ConfigFile:
    """Read ``path``'s keys with their comments; raises ``FileNotFoundError`` naming it."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the CLI reference expects this config file")
    lines = path.read_text().splitlines()
    header: list[str] = []
    usage: list[str] = []
    is_global = False
    i = 0
    while i < len(lines) and lines[i].lstrip().startswith("#"):
        text = lines[i].lstrip()[1:]
        if text.strip() == GLOBAL:
            is_global = True
        elif text.startswith("   "):  # "#   unet-seg-train ...": a usage line
            usage.append(text.strip())
        else:
            header.append(text.strip())
        i += 1
    entries: list[Entry] = []
    defaults: list[tuple[str, str, str]] = []
    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    for line in lines[i:]:
        stripped = line.strip()
        if not stripped:
            pending = []
            continue
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
            continue
        match = KEY_LINE.match(line)
        if match is None:  # a list item or a continuation line of the key above
            item = DEFAULT_ITEM.match(line)
            if item and stack and stack[0][1] == "defaults":
                defaults.append((item["group"], item["option"], item["why"] or ""))
            pending = []
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"]))
        raw, inline = split_comment(match["rest"] or "")
        key_path = tuple(key for _, key in stack)
        attach_pending(entries, key_path, pending)
        comment = sentences(" ".join(pending), inline)
        entries.append(Entry(key_path, raw, comment))
        pending = []
    values = yaml.safe_load("\n".join(lines)) or {}
    return ConfigFile(header, usage, entries, defaults, is_global, values)


def sentences(*parts: str) -> str:
    """Comment parts joined into one text; each but the last ends as a sentence."""
    parts = [part for part in parts if part]
    closed = [p if p.endswith((".", "!", "?", ":")) else f"{p}." for p in parts[:-1]]
    return " ".join(closed + parts[-1:])


def attach_pending(entries: list[Entry], key_path: tuple[str, ...], pending: list[str]) -> None:
    """A comment block that opens with ``<earlier sibling key>:`` explains that key, not the next
    one (``# label_map: objects: ...`` under ``label_map``): move it there."""
    if not pending:
        return
    named = KEY_LINE.match(pending[0])
    if named is None:
        return
    sibling = (*key_path[:-1], named["key"])
    for entry in entries:
        if entry.path == sibling:
            entry.comment = sentences(entry.comment, " ".join(pending))
            pending.clear()
            return


def shown_value(config: ConfigFile, entry: Entry) -> str:
    """The default as written; block lists in flow style; a mapping of keys shows nothing."""
    if entry.raw:
        return f"`{entry.raw}`"
    value: object = config.values
    for key in entry.path:
        value = value.get(key) if isinstance(value, dict) else None
    if isinstance(value, dict):
        return ""
    dumped = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return f"`{dumped.removesuffix('...').strip()}`"


def prose(text: str) -> str:
    """Comment text as Markdown: `code` stays code, everything else is shown literally."""
    parts = text.split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: no code spans at all
        parts = [text.replace("`", "'")]
    out = []
    for index, part in enumerate(parts):
        if index % 2:
            out.append(f"`{part}`")
        else:
            escaped = html.escape(part, quote=False)
            out.append(re.sub(r"([\\*_\[\]|])", r"\\\1", escaped))
    return "".join(out)


def key_table(config: ConfigFile, prefix: str = "") -> list[str]:
    """``| key | default | meaning |`` for every key of ``config`` but Hydra's own."""
    rows = ["| key | default | meaning |", "| --- | --- | --- |"]
    for entry in config.entries:
        if entry.path[0] in ("defaults", HYDRA):
            continue
        value = shown_value(config, entry)
        if not value and not entry.comment:  # a mapping whose keys follow: they say it all
            continue
        key = prefix + ".".join(entry.path)
        rows.append(f"| `{key}` | {value} | {prose(entry.comment)} |")
    return rows if len(rows) > 2 else ["This option sets no keys of its own."]


def describe(config: ConfigFile) -> list[str]:
    """The header comment as a paragraph and its usage lines as a code block."""
    lines = [prose(" ".join(config.header))] if config.header else []
    if config.usage:
        lines += ["", "```bash", *config.usage, "```"]
    return lines


def command_groups(config: ConfigFile) -> list[tuple[str, str, str]]:
    """The config groups a command composes, with its default option: Hydra's own left out."""
    groups = []
    for group, option, why in config.defaults:
        if group.startswith("override") or group == HYDRA or group == "_self_":
            continue
        groups.append((group, option, why))
    return groups


def chosen_option(item: tuple[str, str, str]) -> str:
    """``("override /data", "sample_3d", "")`` -> ``"`data=sample_3d`"``."""
    group, option, _ = item
    group = group.removeprefix("override").strip().lstrip("/")
    return f"`{group}={option}`"


def group_anchor(group: str) -> str:
    return f"group-{group}"


def render(conf_dir: Path) -> str:
    """The whole reference page for the configs in ``conf_dir``."""
    commands = {name: read_config(conf_dir / f"{name}.yaml") for name in COMMANDS}
    out = [
        "# Command-line options",
        "",
        "Generated from `conf/` when the site is built (`docs/hooks/cli_reference.py`), so it",
        "shows what the commands run with. Set any key as `key=value` on the command line",
        "(`unet-seg-predict tile_size=256 outputs.instances=true`) and choose a config group's",
        "option as `group=option` (`unet-seg-train model=unet_paper`). `???` marks a value",
        "without a default, which must be given; `${...}` refers to another key. Every command's",
        "`--help` prints its usage examples and main options.",
        "",
    ]
    used_by: dict[str, list[str]] = {}
    for name, config in commands.items():
        out += [f"## unet-seg-{name}", "", *describe(config), ""]
        groups = command_groups(config)
        if groups:
            out += ["Config groups:", ""]
            for group, option, why in groups:
                used_by.setdefault(group, []).append(f"{name} ({option or 'null'})")
                note = f": {prose(why)}" if why else ""
                out.append(f"- [`{group}`](#{group_anchor(group)}), default `{option}`{note}")
            out.append("")
        out += [*key_table(config), ""]
    out += ["## Config groups", ""]
    for group, users in used_by.items():
        folder = conf_dir / group
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: the CLI reference expects this config group")
        out += [f"### Group: {group}", "", f"Used by {', '.join(users)}. Options:", ""]
        for option_file in sorted(folder.glob("*.yaml")):
            option = read_config(option_file)
            prefix = "" if option.is_global else f"{group}."
            out += [f"#### {group}={option_file.stem}", "", *describe(option), ""]
            chosen = [chosen_option(item) for item in option.defaults]
            if chosen:
                out += [f"Chooses {', '.join(chosen)}.", ""]
            out += [*key_table(option, prefix), ""]
    return "\n".join(out)


def conf_dir_of(config) -> Path:
    """``conf/`` beside ``mkdocs.yml``."""
    return Path(config["config_file_path"]).resolve().parent / "conf"


def on_config(config):
    """Fail the build at once, naming the file, if a command config is missing."""
    for name in COMMANDS:
        path = conf_dir_of(config) / f"{name}.yaml"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the CLI reference expects this config file")
    return config


def on_page_markdown(markdown, page, config, files):
    """The checked-in page is a placeholder: its content is replaced by the rendered one."""
    if page.file.src_uri == PAGE:
        return render(conf_dir_of(config))
    return markdown


def on_serve(server, config, builder):
    """``mkdocs serve`` rebuilds when a config changes."""
    server.watch(str(conf_dir_of(config)))
    return server


if __name__ == "__main__":
    print(render(Path(__file__).resolve().parents[2] / "conf"))
