"""The files in deploy/ agree with the code: every PromQL expression parses, every metric it
names is one a running app exports (or a recording rule), every alert says where its runbook
is, the dashboard is well formed, and the systemd units name real commands and settings."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

pytest.register_assert_rewrite("api_fixtures")
pytest_plugins = ("api_fixtures",)

from api_fixtures import Api, spec  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from stellaorch.cli.main import app as cli_app  # noqa: E402
from stellaorch.settings import Settings  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "stella-orchestrator.json"
SYSTEMD = ROOT / "deploy" / "systemd"
SEVERITIES = frozenset({"warning", "critical"})
# Series Prometheus makes itself for every scrape target, not the code.
PROMETHEUS_OWN = frozenset({"up"})
# What each exposition type writes as sample names (prometheus_client, text format 0.0.4).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
}
# Grafana's variables, replaced the way Grafana would before the query reaches Prometheus.
DASHBOARD_VARIABLES = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}
TENANT = "acme"


# -- reading the files --------------------------------------------------------------------
def rules_document() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(RULES.read_text())
    return document


def all_rules(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule for group in document["groups"] for rule in group["rules"]]


def recorded_names(document: dict[str, Any]) -> set[str]:
    return {rule["record"] for rule in all_rules(document) if "record" in rule}


def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return document


def panels(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that queries (rows hold no targets), nested rows included."""
    for panel in document["panels"]:
        if panel["type"] == "row":
            yield from panels({"panels": panel.get("panels", [])})
        else:
            yield panel


def with_variables_replaced(expr: str, variables: dict[str, str]) -> str:
    """The query Grafana sends; a variable the dashboard does not define is an error."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in variables, f"undefined dashboard variable ${name} in {expr!r}"
        return variables[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


def dashboard_exprs(document: dict[str, Any]) -> list[str]:
    variables = dict(DASHBOARD_VARIABLES)
    for variable in document["templating"]["list"]:
        variables[variable["name"]] = ".*"
    return [
        with_variables_replaced(target["expr"], variables)
        for panel in panels(document)
        for target in panel["targets"]
    ]


def variable_metrics(document: dict[str, Any]) -> set[str]:
    """The metrics the dashboard's `label_values(metric, label)` variables read."""
    queries = [v["definition"] for v in document["templating"]["list"] if "definition" in v]
    return {m.group(1) for q in queries for m in re.finditer(r"label_values\((\w+),", q)}


def all_exprs() -> list[str]:
    rules = [str(rule["expr"]) for rule in all_rules(rules_document())]
    return rules + dashboard_exprs(dashboard())


# -- PromQL -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Selector:
    """One metric selector of an expression: its name and its `le` matcher, if any."""

    name: str
    le: str | None


def selectors(expr: str) -> list[Selector]:
    """Every vector selector in the expression (inside ranges, subqueries and calls too)."""
    found: list[Selector] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            matchers = {m.name: m.value for m in node.matchers.matchers}
            found.append(Selector(node.name or matchers["__name__"], matchers.get("le")))

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def unknown_metrics(exprs: Iterable[str], known: set[str]) -> dict[str, set[str]]:
    """Metric names used in `exprs` that are not in `known`, with the expressions using them."""
    unknown: dict[str, set[str]] = {}
    for expr in exprs:
        for selector in selectors(expr):
            if selector.name not in known:
                unknown.setdefault(selector.name, set()).add(expr)
    return unknown


def unknown_buckets(exprs: Iterable[str], buckets: dict[str, set[str]]) -> set[tuple[str, str]]:
    """(metric, le) pairs whose bucket boundary the code does not export, spelt as exported."""
    return {
        (s.name, s.le)
        for expr in exprs
        for s in selectors(expr)
        if s.le is not None and s.le not in buckets.get(s.name, set())
    }


# -- what the code exports ----------------------------------------------------------------
@dataclass(frozen=True)
class Exposition:
    """The sample names a real scrape can hold, and the `le` values of each bucket series."""

    names: set[str]
    buckets: dict[str, set[str]]


def exposition_of(text: str) -> Exposition:
    names: set[str] = set()
    buckets: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        # A labelled family with no sample yet still declares its type: its names count.
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
        for sample in family.samples:
            names.add(sample.name)
            if "le" in sample.labels:
                buckets.setdefault(sample.name, set()).add(sample.labels["le"])
    return Exposition(names, buckets)


async def scraped(api: Api) -> Exposition:
    """The exposition of an app that has finished one run, as a `*` scraper sees it."""
    await api.publish(TENANT, spec("deploy-check", [{"id": "only", "plugin": "noop"}]))
    api.start_worker()
    run = await api.start(TENANT, "deploy-check")
    assert await api.wait(TENANT, run["runId"]) == "completed"
    headers = api.headers(None, token_tenants=["*"], reason=None)
    response = await api.client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    return exposition_of(response.text)


# -- rules.yml ----------------------------------------------------------------------------
def test_rules_file_is_groups_of_named_records_and_alerts() -> None:
    document = rules_document()
    assert set(document) == {"groups"}
    names = [group["name"] for group in document["groups"]]
    assert len(names) == len(set(names)), names
    for group in document["groups"]:
        assert group["rules"], group["name"]
        for rule in group["rules"]:
            assert ("record" in rule) != ("alert" in rule), rule
            assert isinstance(rule["expr"], str) and rule["expr"].strip(), rule


def test_recording_rules_follow_the_level_metric_operation_naming() -> None:
    for name in recorded_names(rules_document()):
        assert re.fullmatch(r"orchestrator:[a-z0-9_]+:[a-z0-9_]+", name), name


def test_every_alert_has_for_a_severity_and_annotations() -> None:
    alerts = [rule for rule in all_rules(rules_document()) if "alert" in rule]
    assert len({rule["alert"] for rule in alerts}) == len(alerts)
    for rule in alerts:
        assert re.fullmatch(r"\d+[smh]", str(rule["for"])), rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), rule["alert"]


def heading_anchors(markdown: str) -> set[str]:
    """The anchors a Markdown renderer gives the headings (GitHub's rule)."""
    headings = re.findall(r"^#{1,6} (.+)$", markdown, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_every_runbook_annotation_names_an_existing_section() -> None:
    for rule in all_rules(rules_document()):
        if "alert" not in rule:
            continue
        path, _, anchor = rule["annotations"]["runbook"].partition("#")
        assert path.startswith("docs/") and (ROOT / path).is_file(), rule["alert"]
        assert anchor in heading_anchors((ROOT / path).read_text()), (rule["alert"], anchor)


def test_both_burn_windows_of_each_slo_have_an_alert_at_the_policy_factors() -> None:
    alerts = {r["alert"]: r for r in all_rules(rules_document()) if "alert" in r}
    burn = [r for r in alerts.values() if "slo" in r["labels"]]
    policy = {("critical", "1h", "5m", "14"), ("warning", "6h", "30m", "2")}
    for slo in {r["labels"]["slo"] for r in burn}:
        seen = {burn_policy(rule) for rule in burn if rule["labels"]["slo"] == slo}
        assert seen == policy, slo


def burn_policy(rule: dict[str, Any]) -> tuple[str, str, str, str]:
    """(severity, long window, short window, factor) of a multiwindow burn alert."""
    slo = rule["labels"]["slo"]
    pattern = rf"orchestrator:slo_{slo}:burn_rate(\d+[mh]) >= (\d+)"
    (long, factor), (short, factor_again) = re.findall(pattern, rule["expr"])
    assert factor == factor_again, rule["alert"]
    return rule["labels"]["severity"], long, short, factor


# -- PromQL in rules and dashboard --------------------------------------------------------
def test_every_expression_parses() -> None:
    exprs = all_exprs()
    assert len(exprs) > 40
    for expr in exprs:
        promql_parser.parse(expr)


def test_a_malformed_expression_is_refused_by_the_parser() -> None:
    with pytest.raises(ValueError):
        promql_parser.parse('sum(rate(orchestrator_runs_total{status="failed"}[5m])')


async def test_every_metric_in_rules_and_dashboard_is_exported_or_recorded(api: Api) -> None:
    exposition = await scraped(api)
    known = exposition.names | recorded_names(rules_document()) | PROMETHEUS_OWN
    exprs = all_exprs()
    assert unknown_metrics(exprs, known) == {}
    assert unknown_buckets(exprs, exposition.buckets) == set()
    assert variable_metrics(dashboard()) - exposition.names == set()


# The check itself does not depend on the store: one is enough.
@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
async def test_a_misspelt_metric_or_bucket_is_caught(api: Api) -> None:
    exposition = await scraped(api)
    known = exposition.names | recorded_names(rules_document())
    wrong = [
        'sum(rate(orchestrator_run_total{status="failed"}[5m]))',
        "max(orchestrator:queue_depth:max_by_tenants)",
    ]
    assert set(unknown_metrics(wrong, known)) == {
        "orchestrator_run_total",
        "orchestrator:queue_depth:max_by_tenants",
    }
    bucket = 'rate(orchestrator_run_duration_seconds_bucket{le="300"}[5m])'
    assert unknown_buckets([bucket], exposition.buckets) == {
        ("orchestrator_run_duration_seconds_bucket", "300")
    }


def test_a_dashboard_variable_that_is_not_defined_is_caught() -> None:
    with pytest.raises(AssertionError, match=r"\$region"):
        with_variables_replaced('up{region="$region"}', DASHBOARD_VARIABLES)


# -- the dashboard ------------------------------------------------------------------------
def test_dashboard_has_a_datasource_and_a_tenant_variable() -> None:
    document = dashboard()
    variables = {v["name"]: v for v in document["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["tenant"]["type"] == "query"
    assert variable_metrics(document), "the tenant variable reads no metric"
    assert document["schemaVersion"] >= 36


def test_every_dashboard_panel_has_a_title_a_target_and_the_datasource_variable() -> None:
    document = dashboard()
    ids = [panel["id"] for panel in document["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels(document):
        assert panel["title"].strip(), panel["id"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_the_dashboard_shows_every_recorded_burn_rate() -> None:
    burns = {n for n in recorded_names(rules_document()) if ":burn_rate" in n}
    shown = {s.name for expr in dashboard_exprs(dashboard()) for s in selectors(expr)}
    assert {n for n in burns if not n.endswith("30m")} <= shown


# -- systemd units ------------------------------------------------------------------------
def exec_lines(unit: Path) -> list[list[str]]:
    """The `stella …` arguments of every ExecStart/ExecStartPre line of a unit."""
    commands = []
    for line in unit.read_text().splitlines():
        key, _, value = line.partition("=")
        if key in ("ExecStart", "ExecStartPre"):
            program, *args = value.split()
            assert program.endswith("/stella"), line
            commands.append(args)
    return commands


def command_help(args: list[str]) -> str:
    """`stella <command path> --help` (the words before the first option); the command exists."""
    path = list(itertools.takewhile(lambda arg: not arg.startswith("-"), args))
    result = CliRunner().invoke(cli_app, [*path, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, (args, result.output)
    return result.output


@pytest.mark.parametrize("role", ["api", "worker", "scheduler"])
def test_each_unit_runs_its_existing_subcommand_with_existing_options(role: str) -> None:
    unit = SYSTEMD / f"stella-orch-{role}.service"
    commands = exec_lines(unit)
    assert ["orch", role] == commands[-1][:2]
    for args in commands:
        shown = command_help(args)
        for option in (a for a in args if a.startswith("--")):
            assert option in shown, (unit.name, option)
    text = unit.read_text()
    assert "Restart=on-failure" in text and "NoNewPrivileges=true" in text
    assert ("ExecStartPre=" in text) == (role == "api")


def test_the_worker_unit_leaves_user_namespaces_to_bubblewrap() -> None:
    text = (SYSTEMD / "stella-orch-worker.service").read_text()
    for setting in ("RestrictNamespaces", "PrivateUsers", "ProtectKernelTunables", "ProtectProc"):
        assert not re.search(rf"^{setting}=", text, flags=re.MULTILINE), setting


def test_a_command_that_does_not_exist_is_caught() -> None:
    with pytest.raises(AssertionError):
        command_help(["orch", "apiserver"])


def environment_file() -> dict[str, str]:
    """Every STELLA_* assignment of the example file, commented-out examples included (an
    operator uncomments them as they are)."""
    lines = (SYSTEMD / "stella-orch.env").read_text().splitlines()
    matches = map(re.compile(r"^#?(STELLA_\w+)=(.*)$").match, lines)
    return {m.group(1): m.group(2) for m in matches if m}


def test_the_environment_file_names_only_existing_settings() -> None:
    settings = {f"STELLA_ORCH_{name.upper()}" for name in Settings.model_fields}
    named = set(environment_file())
    assert named, "no settings in the environment file"
    assert named <= settings, named - settings


def test_the_environment_file_values_are_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in environment_file().items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.database_url.startswith("postgresql://")
    assert settings.worker_tenants == ["acme", "globex"]
