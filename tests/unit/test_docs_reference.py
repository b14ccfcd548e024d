"""The docs can never drift from the code: reference tables, metrics, exceptions, CLI.

``docs/src/configuration.md`` holds the transport option and settings tables
between ``<!-- ...:start -->`` / ``<!-- ...:end -->`` markers; they must equal what
:func:`option_table` renders from the declarations.  Regenerate them with::

    .venv/bin/python -m tests.unit.test_docs_reference
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import click
import pytest
from prometheus_client.metrics import MetricWrapperBase

from celery_durable import exceptions, metrics
from celery_durable.cli import durable
from celery_durable.options import Option
from celery_durable.settings import SETTINGS
from celery_durable.transport.options import TRANSPORT_OPTIONS

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = DOCS / "src"
TABLES = {"transport-options": TRANSPORT_OPTIONS, "settings": SETTINGS}


def _type_name(opt: Option) -> str:
    types = opt.type if isinstance(opt.type, tuple) else (opt.type,)
    text = " or ".join(t.__name__ for t in types)
    return text + " or None" if opt.nullable else text


def _allowed(opt: Option) -> str:
    parts = []
    if opt.choices is not None:
        parts.append("one of " + ", ".join(f"`{c}`" for c in opt.choices))
    if opt.min is not None:
        parts.append(f"≥ {opt.min:g}")
    return "; ".join(parts)


def option_table(options: Sequence[Option]) -> str:
    """The markdown table for ``options``, one row per option, in declaration order."""
    rows = ["| Name | Type | Default | Allowed | Meaning |", "|---|---|---|---|---|"]
    for opt in options:
        cells = (f"`{opt.name}`", _type_name(opt), f"`{opt.default!r}`", _allowed(opt), opt.doc)
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _between_markers(text: str, name: str) -> str:
    match = re.search(rf"<!-- {name}:start -->\n(.*?)\n<!-- {name}:end -->", text, re.DOTALL)
    assert match, f"configuration.md lacks the <!-- {name}:start/end --> markers"
    return match.group(1)


@pytest.mark.parametrize("name", sorted(TABLES))
def test_configuration_tables_match_the_code(name: str) -> None:
    page = (PAGES / "configuration.md").read_text()
    expected = option_table(TABLES[name])
    assert _between_markers(page, name) == expected, (
        f"docs/src/configuration.md table {name!r} is out of date; regenerate it with "
        "`.venv/bin/python -m tests.unit.test_docs_reference`. Expected:\n" + expected
    )


def declared_metrics() -> list[MetricWrapperBase]:
    return [m for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)]


def exposed_names(metric: MetricWrapperBase) -> set[str]:
    """The sample names Prometheus sees (counters gain ``_total``, histograms three more)."""
    name, kind = metric._name, metric._type
    if kind == "counter":
        return {f"{name}_total", f"{name}_created"}
    if kind == "histogram":
        return {f"{name}_bucket", f"{name}_sum", f"{name}_count", f"{name}_created"}
    return {name}


def test_every_metric_is_documented() -> None:
    page = (PAGES / "metrics.md").read_text()
    declared = declared_metrics()
    assert len(declared) >= 15
    missing = [m._name for m in declared if f"`{m._name}" not in page]
    assert not missing, f"metrics missing from docs/src/metrics.md: {missing}"


def _queried_names(text: str) -> set[str]:
    return set(re.findall(r"\bcelery_durable_[a-z_]+", text))


def test_dashboard_and_alerts_query_only_real_metrics() -> None:
    exposed = set().union(*(exposed_names(m) for m in declared_metrics()))
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs, "the dashboard has no queries"
    unknown = _queried_names("\n".join(exprs)) - exposed
    assert not unknown, f"dashboard queries metrics that do not exist: {sorted(unknown)}"
    alerts = re.findall(r"```yaml\n(.*?)```", (PAGES / "metrics.md").read_text(), re.DOTALL)
    assert alerts and "alert:" in alerts[0]
    unknown = _queried_names("\n".join(re.findall(r"expr: (.*)", "\n".join(alerts)))) - exposed
    assert not unknown, f"alert rules query metrics that do not exist: {sorted(unknown)}"


def test_every_exception_is_documented() -> None:
    text = "\n".join(p.read_text() for p in PAGES.glob("*.md"))
    for name in exceptions.__all__:
        assert isinstance(getattr(exceptions, name), type)
        assert re.search(rf"\b{name}\b", text), f"{name} is not in the docs"


def cli_commands(group: click.Group = durable, prefix: str = "durable") -> Iterator[str]:
    for name, command in sorted(group.commands.items()):
        path = f"{prefix} {name}"
        if isinstance(command, click.Group):
            yield from cli_commands(command, path)
        else:
            yield path


def test_every_cli_command_and_option_is_documented() -> None:
    page = (PAGES / "cli.md").read_text()
    for path in cli_commands():
        assert f"## `{path}" in page, f"`celery {path}` has no section in docs/src/cli.md"
    group: click.Command = durable
    for path in cli_commands():
        command = group
        for part in path.split()[1:]:
            assert isinstance(command, click.Group)
            command = command.commands[part]
        for param in command.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("--"):
                    assert opt in page, f"`celery {path} {opt}` is not in docs/src/cli.md"


if __name__ == "__main__":
    for table, options in TABLES.items():
        print(f"<!-- {table}:start -->\n{option_table(options)}\n<!-- {table}:end -->\n")
