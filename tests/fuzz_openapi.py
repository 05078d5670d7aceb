"""Schemathesis (4.x) over one served OpenAPI spec: every operation, positive and negative
cases, against the real uvicorn server, with the credentials each route's role table asks for.

Driven through schemathesis' Python API rather than its pytest plugin so the servers can
be started by fixtures first and every case is counted: ``operation.as_strategy`` under a
derandomized ``@given``, ``case.call`` with the caller's headers, then
``case.validate_response`` with ``not_a_server_error`` and ``response_schema_conformance``
(a status the spec declares must carry the declared body), plus our own rule that a 4xx
says why (``detail`` or ``reason``). Failures are collected, not raised one by one, so a run
reports all of them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance

# method, path template -> (headers, fixed path parameters)
Credentials = Callable[[str, str], tuple[dict[str, str], dict[str, str]]]
CHECKS = [not_a_server_error, response_schema_conformance]


@dataclass
class Report:
    """What a run did: operations, cases per mode, statuses, and every failure."""

    spec: str
    operations: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    cases: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"spec": self.spec, "operations": len(self.operations),
                "cases": dict(self.cases), "cases_total": sum(self.cases.values()),
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "skipped": self.skipped, "failures": len(self.failures)}


def says_why(response: Any) -> str | None:
    """None if a 4xx body names its reason (``detail`` or ``reason``; a page for a person,
    e.g. the tablet's pairing form, is its own explanation), else the problem."""
    content_type = response.headers.get("content-type") or [""]  # schemathesis: lists
    if str(content_type[0] if isinstance(content_type, list) else content_type).startswith(
            "text/html"):
        return None if response.content.strip() else f"{response.status_code} empty page"
    try:
        body = json.loads(response.content or b"null")
    except ValueError:
        return f"{response.status_code} without a JSON body"
    if isinstance(body, dict) and (body.get("detail") or body.get("reason")):
        return None
    return f"{response.status_code} without detail/reason: {str(body)[:120]}"


def run_spec(name: str, base_url: str, credentials: Credentials, *, examples: int,
             negative_examples: int, skip: dict[str, str] | None = None,
             timeout_s: float = 10.0) -> Report:
    """Fuzz every operation of ``base_url``/openapi.json; returns the report."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    report = Report(name)
    skip = skip or {}
    for result in schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        if label in skip:
            report.skipped[label] = skip[label]
            continue
        report.operations.append(label)
        headers, path_parameters = credentials(operation.method.upper(), operation.path)
        for mode, count in ((GenerationMode.POSITIVE, examples),
                            (GenerationMode.NEGATIVE, negative_examples)):
            if count:
                _run_operation(report, operation, label, mode, count, base_url, headers,
                               path_parameters, timeout_s)
    return report


def _run_operation(report: Report, operation: Any, label: str, mode: GenerationMode,
                   count: int, base_url: str, headers: dict[str, str],
                   path_parameters: dict[str, str], timeout_s: float) -> None:
    strategy = operation.as_strategy(generation_mode=mode,
                                     path_parameters=path_parameters or None)

    @settings(max_examples=count, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(strategy)
    def fuzz(case: Any) -> None:
        response = case.call(base_url=base_url, headers=headers, timeout=timeout_s)
        report.cases[mode.value] += 1
        report.statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except FailureGroup as group:
            titles = "; ".join(sorted({f.title for f in group.exceptions}))
            report.failures.append(f"{label} [{mode.value}] {response.status_code}: {titles} "
                                   f"<- {case.as_curl_command(headers=headers)[:300]}")
        if 400 <= response.status_code < 500:
            problem = says_why(response)
            if problem is not None:
                report.failures.append(f"{label} [{mode.value}] {problem}")
        report.failures[:] = list(dict.fromkeys(report.failures))  # one line per problem

    try:
        fuzz()
    except Exception as exc:  # e.g. unsatisfiable negative cases for a parameterless route
        if type(exc).__name__ in ("Unsatisfiable", "FailedHealthCheck"):
            report.skipped[f"{label} [{mode.value}]"] = type(exc).__name__
        else:
            report.failures.append(f"{label} [{mode.value}] raised {type(exc).__name__}: {exc}")
