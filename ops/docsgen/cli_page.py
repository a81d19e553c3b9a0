"""The CLI reference (docs/reference/cli.md): every `embedq` command's own `--help`."""

from __future__ import annotations

from pathlib import Path

import click

PAGE = Path("docs") / "reference" / "cli.md"
INTRO = """# CLI reference

Every `embedq` command with its `--help`, generated from the commands themselves by
`embedq docs generate` (a test fails when this page and the code differ). Settings come from the
environment: see the [settings reference](settings.md).
"""
HELP_WIDTH = 100


def _commands(group: click.Group, path: list[str]) -> list[tuple[list[str], click.Command]]:
    found: list[tuple[list[str], click.Command]] = []
    for name in sorted(group.commands):
        command = group.commands[name]
        if command.hidden:
            continue
        found.append(([*path, name], command))
        if isinstance(command, click.Group):
            found.extend(_commands(command, [*path, name]))
    return found


def _help(command: click.Command, path: list[str], root: click.Group) -> str:
    parent = click.Context(root, info_name=path[0], max_content_width=HELP_WIDTH)
    ctx = click.Context(
        command, info_name=" ".join(path[1:]), parent=parent, max_content_width=HELP_WIDTH
    )
    ctx.terminal_width = HELP_WIDTH
    return command.get_help(ctx)


def render_markdown(root: click.Group) -> str:
    """The page: one section per command, its help as click prints it."""
    sections = [INTRO]
    for path, command in _commands(root, ["embedq"]):
        summary = command.get_short_help_str(limit=HELP_WIDTH)
        sections.append(
            f"## `{' '.join(path)}`\n\n{summary}\n\n```text\n{_help(command, path, root)}\n```\n"
        )
    return "\n".join(sections)
