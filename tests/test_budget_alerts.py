"""
Alert rules and the dashboard made from budgets.json, checked with the real tools:
``promtool check rules`` and ``promtool test rules`` on recorded series, and the
committed files in examples/ kept equal to what the generator makes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine

from conftest import REQUIRE_SERVICES
from fault_load import serve
from helpers import free_port
from perfkit.budgets import (
    duration_buckets,
    grafana_dashboard,
    le_label,
    load_budgets,
    prometheus_rules,
    to_yaml,
)
from perfkit.budgets._cli import main
from perfkit.reference import open_stores, seed

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "examples" / "bill_api" / "monitoring"

# Three routes with the defaults' three latency budgets, a quiet one, and a route
# the selector must keep out.
BUDGETS = load_budgets({
    "version": 1,
    "defaults": {"p50_ms": 25, "p95_ms": 100, "p99_ms": 250, "max_error_rate": 0.01, "rate": 3},
    "routes": [
        {"method": "GET", "route": "/a/{id}"},
        {"method": "GET", "route": "/b"},
        {"method": "POST", "route": "/c"},
        {"method": "GET", "route": "/quiet"},
        {"method": "GET", "route": "/nobucket", "p50_ms": 25, "p95_ms": 30, "p99_ms": 250},
        {"method": "GET", "route": "/other"},
    ],
})  # fmt: skip
SELECTOR = 'job="api"'


def _installed(tool: str) -> str:
    """The path of *tool* (Debian's prometheus package); skip, or fail when required."""
    found = shutil.which(tool)
    if found is None:
        message = f"{tool} is not installed (Debian: apt-get install prometheus)"
        if REQUIRE_SERVICES:
            pytest.fail(f"{message}; PERFKIT_REQUIRE_SERVICES is set", pytrace=False)
        pytest.skip(message)
    return found


@pytest.fixture(scope="module")
def promtool() -> str:
    return _installed("promtool")


def _promtool(promtool: str, *args: str, cwd: Path) -> str:
    done = subprocess.run(
        [promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _histogram(route: str, method: str, status: int, per_minute: dict[str, str]) -> list[Any]:
    """Bucket and count series of one route; *per_minute* maps ``le`` to its values."""
    labels = (
        f'job="api",http_request_method="{method}",http_route="{route}",'
        f'http_response_status_code="{status}"'
    )
    series = [
        {"series": f"http_server_request_duration_seconds_bucket{{{labels},le=\"{le}\"}}",
         "values": values}
        for le, values in per_minute.items()
    ]  # fmt: skip
    series.append(
        {"series": f"http_server_request_duration_seconds_count{{{labels}}}",
         "values": per_minute["+Inf"]}
    )  # fmt: skip
    return series


def _steady(total: float, within: dict[float, float], minutes: int = 60) -> dict[str, str]:
    """Counters growing by *total* a minute, *within[t]* of them at or under *t* seconds."""
    per_minute = {le_label(t): f"0+{n:g}x{minutes}" for t, n in within.items()}
    per_minute["+Inf"] = f"0+{total:g}x{minutes}"
    return per_minute


def _input_series() -> list[Any]:
    series: list[Any] = []
    # /a/{id}: 1 request/s, 10 % slower than 100 ms (p95 budget: 5 %), none over 250 ms.
    series += _histogram("/a/{id}", "GET", 200, _steady(60, {0.025: 54, 0.1: 54, 0.25: 60}))
    # /b: healthy, but every request of minute 44 took 100-250 ms: a blip the 5m window
    # sees (20 %) and the 30m window does not (3.3 %): no page.
    blip = "0+60x43 2580 2640+60x15"
    series += _histogram("/b", "GET", 200, {"0.025": blip, "0.1": blip, "0.25": "0+60x60",
                                            "+Inf": "0+60x60"})  # fmt: skip
    # /c: 3 % of answers 500 (budget: 1 %).
    series += _histogram("/c", "POST", 200, _steady(97, {0.025: 97, 0.1: 97, 0.25: 97}))
    series += _histogram("/c", "POST", 500, _steady(3, {0.025: 3, 0.1: 3, 0.25: 3}))
    # /quiet: one request every 10 minutes, all slow: under min_rate, no alert.
    series += _histogram("/quiet", "GET", 200, _steady(0.1, {0.025: 0, 0.1: 0, 0.25: 0}))
    # /nobucket: its 30 ms budget has no bucket at 0.03 to read (no duration_buckets=).
    series += _histogram("/nobucket", "GET", 200, _steady(6, {0.025: 6, 0.1: 6, 0.25: 6}))
    # Another job's /other, all slow and failing: outside the selector.
    other = _histogram("/other", "GET", 500, _steady(60, {0.025: 0, 0.1: 0, 0.25: 0}))
    for entry in other:
        entry["series"] = entry["series"].replace('job="api"', 'job="batch"')
    series += other
    series += [
        {"series": 'perfkit_breaker_state{job="api",perfkit_breaker_name="payments"}',
         "values": "0x30 2x30"},
        {"series": 'perfkit_breaker_state{job="api",perfkit_breaker_name="text"}',
         "values": "0x60"},
        {"series": 'perfkit_cache_operations_total{job="api",perfkit_cache_namespace="users",'
                   'perfkit_cache_result="hit"}', "values": "0+10x60"},
        {"series": 'perfkit_cache_operations_total{job="api",perfkit_cache_namespace="users",'
                   'perfkit_cache_result="miss"}', "values": "0+90x60"},
        {"series": 'perfkit_cache_operations_total{job="api",perfkit_cache_namespace="bills",'
                   'perfkit_cache_result="hit"}', "values": "0+90x60"},
        {"series": 'perfkit_cache_operations_total{job="api",perfkit_cache_namespace="bills",'
                   'perfkit_cache_result="miss"}', "values": "0+10x60"},
    ]  # fmt: skip
    return series


def _expected(rules: dict[str, Any], alert: str, labels: dict[str, str], value: str) -> Any:
    """The alert as promtool reports it: its labels, its annotations with $value rendered."""
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == alert and labels.items() >= rule["labels"].items():
                annotations = {
                    name: text.replace("{{ $value | humanizePercentage }}", value)
                    .replace("{{ $value | humanize }}", value)
                    .replace("{{ $labels.perfkit_breaker_name }}",
                             labels.get("perfkit_breaker_name", ""))
                    .replace("{{ $labels.perfkit_cache_namespace }}",
                             labels.get("perfkit_cache_namespace", ""))
                    for name, text in rule["annotations"].items()
                }  # fmt: skip
                return {"exp_labels": labels, "exp_annotations": annotations}
    raise AssertionError(f"no {alert} rule with {labels}")


def test_the_rules_pass_promtool_check(promtool: str, tmp_path: Path) -> None:
    """promtool accepts the rules of the committed budgets (syntax, lint, no duplicates)."""
    committed = load_budgets(ROOT / "budgets.json")
    for name, document in (
        ("plain.yml", prometheus_rules(committed)),
        ("selected.yml", prometheus_rules(committed, selector='job="bill-api", env!~"dev|ci"')),
    ):
        (tmp_path / name).write_text(to_yaml(document), encoding="utf-8")
        out = _promtool(promtool, "check", "rules", name, cwd=tmp_path)
        assert "SUCCESS" in out


def test_the_rules_fire_on_recorded_series(promtool: str, tmp_path: Path) -> None:
    """
    promtool test rules: over an hour of recorded series the page and ticket alerts fire
    for a lasting latency breach and an error-rate breach, not for a one-minute blip, a
    route too quiet to judge or another job's series; an open breaker, a cold cache and a
    budget without its bucket alert; and the recording rules hold the ratios the alerts
    use, under the selector's job label.
    """
    rules = prometheus_rules(BUDGETS, selector=SELECTOR)
    (tmp_path / "rules.yml").write_text(to_yaml(rules), encoding="utf-8")
    a = {"job": "api", "http_request_method": "GET", "http_route": "/a/{id}"}
    c = {"job": "api", "http_request_method": "POST", "http_route": "/c"}
    missing = {"job": "api", "http_request_method": "GET", "http_route": "/nobucket"}
    latency = [
        _expected(rules, "PerfkitLatencyBudget",
                  {"severity": severity, "budget": "p95_ms", **a}, "10%")
        for severity in ("page", "ticket")
    ]  # fmt: skip
    errors = [
        _expected(rules, "PerfkitErrorBudget",
                  {"severity": severity, "budget": "max_error_rate", **c}, "3%")
        for severity in ("page", "ticket")
    ]  # fmt: skip
    tests = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": _input_series(),
                "alert_rule_test": [
                    {
                        "eval_time": "45m",
                        "alertname": "PerfkitLatencyBudget",
                        "exp_alerts": latency,
                    },
                    {"eval_time": "45m", "alertname": "PerfkitErrorBudget", "exp_alerts": errors},
                    {
                        "eval_time": "45m",
                        "alertname": "PerfkitBreakerOpen",
                        "exp_alerts": [
                            _expected(
                                rules,
                                "PerfkitBreakerOpen",
                                {"severity": "page", "perfkit_breaker_name": "payments"},
                                "",
                            ),
                        ],
                    },
                    {"eval_time": "31m", "alertname": "PerfkitBreakerOpen", "exp_alerts": []},
                    {
                        "eval_time": "45m",
                        "alertname": "PerfkitCacheHitRatioLow",
                        "exp_alerts": [
                            _expected(
                                rules,
                                "PerfkitCacheHitRatioLow",
                                {"severity": "ticket", "perfkit_cache_namespace": "users"},
                                "10%",
                            ),
                        ],
                    },
                    {
                        "eval_time": "45m",
                        "alertname": "PerfkitBudgetBucketMissing",
                        "exp_alerts": [
                            _expected(
                                rules,
                                "PerfkitBudgetBucketMissing",
                                {"severity": "ticket", "le": "0.03", **missing},
                                "",
                            )
                        ],
                    },
                    # (60 + 60 + 100 + 0.1 + 6) per minute = 3.768 requests/s > the budgets' 3.
                    {
                        "eval_time": "45m",
                        "alertname": "PerfkitTrafficAboveBudgetRate",
                        "exp_alerts": [
                            _expected(
                                rules,
                                "PerfkitTrafficAboveBudgetRate",
                                {"severity": "ticket"},
                                "3.768",
                            )
                        ],
                    },
                ],
                "promql_expr_test": [
                    {
                        "expr": 'route:http_server_requests:rate5m{http_route="/a/{id}"}',
                        "eval_time": "45m",
                        "exp_samples": [
                            {
                                "labels": "route:http_server_requests:rate5m"
                                '{http_request_method="GET",http_route="/a/{id}",job="api"}',
                                "value": 1,
                            }
                        ],
                    },
                    {
                        "expr": "route:http_server_errors:rate30m",
                        "eval_time": "45m",
                        "exp_samples": [
                            {
                                "labels": "route:http_server_errors:rate30m"
                                '{http_request_method="POST",http_route="/c",job="api"}',
                                "value": 0.05,
                            }
                        ],
                    },
                ],
            }
        ],
    }
    (tmp_path / "tests.yml").write_text(to_yaml(tests), encoding="utf-8")
    out = _promtool(promtool, "test", "rules", "tests.yml", cwd=tmp_path)
    assert "SUCCESS" in out


def test_the_committed_monitoring_files_are_current() -> None:
    """examples/bill_api/monitoring is what perfkit-budgets makes from budgets.json."""
    budgets = load_budgets(ROOT / "budgets.json")
    rules = (MONITORING / "alerts.yml").read_text(encoding="utf-8")
    dashboard = json.loads((MONITORING / "dashboard.json").read_text(encoding="utf-8"))
    stale = "stale: run `make monitoring` and commit examples/bill_api/monitoring"
    assert rules == to_yaml(prometheus_rules(budgets, selector=BILL_API_SELECTOR)), stale
    assert dashboard == grafana_dashboard(
        budgets, title="perfkit bill/vote API", selector=BILL_API_SELECTOR
    ), stale


BILL_API_SELECTOR = 'job="bill-api"'


@pytest.mark.anyio
async def test_every_budget_threshold_is_a_bucket_boundary_of_the_example(
    sqlite_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    The example API's /metrics has an ``le`` bucket at every latency threshold of the
    committed budgets.json, so the alerts' ratios are exact.
    """
    from bill_api.app import create_app  # noqa: PLC0415

    seed(sqlite_engine, users=5, bills=5, votes=5)
    monkeypatch.setenv("PERFKIT_BUDGETS", str(ROOT / "budgets.json"))
    with open_stores(sqlite_engine) as stores:
        transport = httpx.ASGITransport(app=create_app(stores=stores))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/bills/1")).status_code == 200
            text = (await client.get("/metrics")).text
    bill_buckets = {
        line.split('le="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("http_server_request_duration_seconds_bucket")
        and 'http_route="/bills/{bill_id}"' in line
    }
    budgets = load_budgets(ROOT / "budgets.json")
    assert {le_label(t) for t in budgets.thresholds_seconds()} <= bill_buckets
    assert len(bill_buckets) == len(duration_buckets(budgets)) + 1  # and +Inf


def test_duration_buckets_add_the_thresholds() -> None:
    budgets = load_budgets({
        "version": 1, "defaults": {"max_error_rate": 0.01, "rate": 10},
        "routes": [{"method": "GET", "route": "/x", "p50_ms": 2, "p95_ms": 30, "p99_ms": 100}],
    })  # fmt: skip
    assert duration_buckets(budgets, base=(0.01, 0.1, 1.0)) == (0.002, 0.01, 0.03, 0.1, 1.0)
    assert le_label(0.03) == "0.03"
    assert le_label(1) == "1.0"
    assert le_label(1e7) == "10000000.0"


def test_the_dashboard_has_a_row_per_budget_with_its_lines() -> None:
    dashboard = grafana_dashboard(BUDGETS, selector=SELECTOR)
    panels = dashboard["panels"]
    assert [p["id"] for p in panels] == list(range(1, len(panels) + 1))
    rows = [p["title"] for p in panels if p["type"] == "row"]
    assert rows == ["Service", *(budget.key for budget in BUDGETS)]
    latency = [p for p in panels if p["title"].startswith("Latency")]
    assert len(latency) == len(BUDGETS.routes)
    steps = latency[0]["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [step["value"] for step in steps] == [None, 0.025, 0.1, 0.25]
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        for target in panel.get("targets", ()):
            assert 'job="api"' in target["expr"]
    # No two panels overlap.
    cells = set()
    for panel in panels:
        grid = panel["gridPos"]
        mine = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])}  # fmt: skip
        assert not cells & mine, panel["title"]
        cells |= mine


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["rules", "{file}", "--selector", "job=api"], "is not a label matcher"),
        (["rules", "{file}", "--min-cache-hit-ratio", "2"], "min_cache_hit_ratio"),
        (["check", "{missing}"], "no such file"),
    ],
)
def test_the_cli_refuses_bad_input(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = str(ROOT / "budgets.json")
    argv = [arg.format(file=file, missing=str(tmp_path / "nope.json")) for arg in args]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_the_cli_writes_rules_and_a_dashboard(tmp_path: Path) -> None:
    budgets = str(ROOT / "budgets.json")
    assert main(["rules", budgets, "-o", str(tmp_path / "alerts.yml")]) == 0
    assert main(["dashboard", budgets, "-o", str(tmp_path / "d.json"), "--title", "Mine"]) == 0
    assert json.loads((tmp_path / "d.json").read_text())["uid"] == "mine"
    assert (tmp_path / "alerts.yml").read_text().startswith("groups:\n")


@pytest.fixture(scope="module")
def prometheus_binary() -> str:
    return _installed("prometheus")


def _query(base: str, expr: str) -> list[Any]:
    answer = httpx.get(f"{base}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", (expr, answer)
    result: list[Any] = answer["data"]["result"]
    return result


def test_a_real_prometheus_scrapes_the_example_and_evaluates_every_rule_and_panel(
    prometheus_binary: str, sqlite_engine: Engine, tmp_path: Path
) -> None:
    """
    Prometheus scrapes the running example API's /metrics every second with the committed
    alerts.yml loaded: every rule evaluates without error, the recording rules find the
    routes and their ``le`` buckets, and every dashboard query runs and, for the routes
    requested, has data.
    """
    from bill_api.app import create_app, make_cache  # noqa: PLC0415

    seed(sqlite_engine, users=20, bills=20, votes=50)
    shutil.copy(MONITORING / "alerts.yml", tmp_path / "alerts.yml")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with (
        open_stores(sqlite_engine, cache=make_cache(None)) as stores,
        serve(create_app(stores=stores)) as api,
        (tmp_path / "prometheus.log").open("wb") as server_log,
    ):
        target = api.removeprefix("http://")
        (tmp_path / "prometheus.yml").write_text(to_yaml({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": ["alerts.yml"],
            "scrape_configs": [{"job_name": "bill-api", "static_configs": [{"targets": [target]}]}],
        }), encoding="utf-8")  # fmt: skip
        server = subprocess.Popen(
            [prometheus_binary, f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=server_log,
        )  # fmt: skip
        try:
            with httpx.Client(base_url=api) as client:
                deadline = time.monotonic() + 60
                bills = []
                while time.monotonic() < deadline:
                    for path in ("/bills/1", "/bills/2/votes/counts", "/users/3", "/bills?limit=5"):
                        client.get(path)
                    created = client.post(
                        "/users",
                        json={"username": f"p{len(bills)}", "email": f"p{len(bills)}@x.org"},
                    )
                    bills.append(created.status_code)
                    ready = _rules_evaluated(base)
                    if ready and _query(
                        base, 'route:http_server_requests:rate5m{http_route="/users"}'
                    ):
                        break
                    time.sleep(0.05)
                else:
                    log = (tmp_path / "prometheus.log").read_text(errors="replace")[-2000:]
                    raise AssertionError(f"no evaluated rules with data within 60 s:\n{log}")
            groups = httpx.get(f"{base}/api/v1/rules", timeout=10).json()["data"]["groups"]
            rules = [rule for group in groups for rule in group["rules"]]
            assert len(rules) == sum(len(g["rules"]) for g in _committed_rules()["groups"])
            bad = [
                (rule["name"], rule.get("lastError")) for rule in rules if rule["health"] != "ok"
            ]
            assert not bad
            within = _query(
                base,
                "route_le:http_server_request_duration_seconds_bucket:rate5m"
                '{http_route="/bills/{bill_id}",http_request_method="GET"}',
            )
            budgets = load_budgets(ROOT / "budgets.json")
            assert {sample["metric"]["le"] for sample in within} == {
                le_label(t) for t in budgets.thresholds_seconds()
            }
            dashboard = json.loads((MONITORING / "dashboard.json").read_text(encoding="utf-8"))
            for panel in dashboard["panels"]:
                for target_query in panel.get("targets", ()):
                    expr = target_query["expr"].replace("$__rate_interval", "1m")
                    result = _query(base, expr)
                    if panel["title"].startswith(("Requests", "Latency")) and (
                        '/bills/{bill_id}"' in expr or panel["title"] == "Requests / s by route"
                    ):
                        assert result, (panel["title"], expr)
            hit_ratio = next(p for p in dashboard["panels"] if p["title"] == "Cache hit ratio")
            assert _query(base, hit_ratio["targets"][0]["expr"].replace("$__rate_interval", "1m"))
        finally:
            server.terminate()
            server.wait(timeout=30)


def _rules_evaluated(base: str) -> bool:
    try:
        answer = httpx.get(f"{base}/api/v1/rules", timeout=2).json()
    except httpx.HTTPError:
        return False
    rules = [rule for group in answer["data"]["groups"] for rule in group["rules"]]
    return bool(rules) and all(
        not rule.get("lastEvaluation", "0001").startswith("0001") for rule in rules
    )


def _committed_rules() -> Any:
    import yaml  # noqa: PLC0415 - a reader other than ours, to check what we wrote

    return yaml.safe_load((MONITORING / "alerts.yml").read_text(encoding="utf-8"))


def test_rules_of_two_services_record_apart() -> None:
    """The selector's labels stay on the recorded series and in every on(...) match."""
    rules = prometheus_rules(BUDGETS, selector='job="api", env!~"dev"')
    recording, alerts = (group["rules"] for group in rules["groups"])
    assert all("sum by (job, env, http_request_method, http_route" in r["expr"] for r in recording)
    latency = next(r for r in alerts if r["alert"] == "PerfkitLatencyBudget")
    assert "and on(job, env, http_request_method, http_route)" in latency["expr"]


def test_the_yaml_reads_back_exactly() -> None:
    """Keys YAML would read as booleans or null, exponents, specials, control characters."""
    import yaml  # noqa: PLC0415

    document = {
        "null": 1, "yes": 2, "on": 3, "plain_key": "{{ $value }} \"q\" \\ é",
        "floats": [1e-07, 1e100, 0.1, float("inf"), -float("inf")],
        "odd": "a\x7fb\u0085c\nd", "empty": {}, "none": [],
    }  # fmt: skip
    assert yaml.safe_load(to_yaml(document)) == document
    assert to_yaml({}) == "{}\n"


def test_an_unreadable_budgets_file_is_a_budget_error(tmp_path: Path) -> None:
    from perfkit.budgets import BudgetError  # noqa: PLC0415

    with pytest.raises(BudgetError, match="cannot be read"):
        load_budgets(tmp_path)  # a directory
    binary = tmp_path / "b.json"
    binary.write_bytes(b"\xff\xfe{}")
    with pytest.raises(BudgetError, match="not UTF-8"):
        load_budgets(binary)
    assert main(["check", str(tmp_path)]) == 2
