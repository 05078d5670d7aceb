"""Member segments: rule documents over a member's aggregates, validated once, then evaluated.

The central team defines a segment as a small JSON rule, e.g.::

    {"all": [{"field": "total_spend", "op": ">=", "value": 500},
             {"field": "tier", "op": "in", "value": ["gold"]},
             {"field": "days_since_last_purchase", "op": "<=", "value": 30}]}

``all`` / ``any`` take a non-empty list of rules, ``not`` takes one rule, a leaf compares one
field. A rule is validated when it is stored (``compile_rule`` raises ``SegmentRuleError``
naming the JSON path of the first problem) so evaluation never fails: it runs over 10,000s of
members per request and a half-evaluated segment would be worse than a refused one.

Missing data: a comparison on a field the member has no value for (never bought, no tier) is
false — also for ``!=`` and ``not_in`` — so "tier != gold" does not silently include members
whose tier is unknown. ``{"op": "exists"}`` tests presence; ``not`` inverts a whole rule.

Pure: no I/O. ``member_facts`` turns the hub's stored aggregates into the fields rules see.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

DAY_S = 86_400.0
MAX_DEPTH = 8
MAX_NODES = 200
MAX_IN_VALUES = 1000

NUMBER, TEXT = "number", "text"
# Field -> type. Derived fields are computed by ``member_facts``.
FIELDS: Mapping[str, str] = {
    "baskets": NUMBER,
    "total_spend": NUMBER,
    "mean_basket_spend": NUMBER,
    "days_since_last_purchase": NUMBER,
    "tier": TEXT,
    "home_store": TEXT,
}
_NUMBER_OPS = ("==", "!=", "<", "<=", ">", ">=", "between", "exists")
_TEXT_OPS = ("==", "!=", "in", "not_in", "exists")
OPS: Mapping[str, tuple[str, ...]] = {NUMBER: _NUMBER_OPS, TEXT: _TEXT_OPS}

Facts = Mapping[str, Any]
Predicate = Callable[[Facts], bool]


class SegmentRuleError(ValueError):
    """A rule document that cannot be evaluated; ``path`` points at the offending part."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message

    def detail(self) -> dict[str, str]:
        return {"reason": "bad_rule", "path": self.path, "message": self.message}


@dataclass(frozen=True)
class Segment:
    """A validated rule: ``matches(facts)`` never raises; ``rule`` is the normalised doc."""

    rule: dict[str, Any]
    fields: frozenset[str]
    matches: Predicate


def _is_number(value: object) -> bool:
    return (not isinstance(value, bool) and isinstance(value, int | float)
            and math.isfinite(value))


def _number_of(facts: Facts, field: str) -> float | None:
    value = facts.get(field)
    return float(value) if value is not None and _is_number(value) else None


def _text_of(facts: Facts, field: str) -> str | None:
    value = facts.get(field)
    return value if isinstance(value, str) else None


_COMPARE: Mapping[str, Callable[[Any, Any], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


class _Compiler:
    def __init__(self) -> None:
        self.nodes = 0
        self.fields: set[str] = set()

    def node(self, doc: object, path: str, depth: int) -> tuple[dict[str, Any], Predicate]:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise SegmentRuleError(path, f"rule too large (more than {MAX_NODES} parts)")
        if depth > MAX_DEPTH:
            raise SegmentRuleError(path, f"rule nested deeper than {MAX_DEPTH} levels")
        if not isinstance(doc, Mapping):
            raise SegmentRuleError(path, "expected an object ({all|any|not} or a condition)")
        keys = set(doc)
        for combinator in ("all", "any"):
            if combinator in keys:
                return self.combine(combinator, doc, path, depth)
        if "not" in keys:
            if keys != {"not"}:
                raise SegmentRuleError(path, f"unexpected key(s) beside 'not': "
                                             f"{', '.join(sorted(keys - {'not'}))}")
            inner_doc, inner = self.node(doc["not"], f"{path}.not", depth + 1)
            return {"not": inner_doc}, lambda facts: not inner(facts)
        if "field" in keys:
            return self.condition(doc, path)
        raise SegmentRuleError(path, "expected one of 'all', 'any', 'not' or 'field'")

    def combine(self, combinator: str, doc: Mapping[str, Any], path: str,
                depth: int) -> tuple[dict[str, Any], Predicate]:
        extra = set(doc) - {combinator}
        if extra:
            raise SegmentRuleError(path, f"unexpected key(s) beside '{combinator}': "
                                         f"{', '.join(sorted(extra))}")
        parts = doc[combinator]
        if not isinstance(parts, list) or not parts:
            raise SegmentRuleError(f"{path}.{combinator}", "expected a non-empty list of rules")
        compiled = [self.node(part, f"{path}.{combinator}[{i}]", depth + 1)
                    for i, part in enumerate(parts)]
        docs = [d for d, _ in compiled]
        preds = tuple(p for _, p in compiled)
        if combinator == "all":
            return {"all": docs}, lambda facts: all(p(facts) for p in preds)
        return {"any": docs}, lambda facts: any(p(facts) for p in preds)

    def condition(self, doc: Mapping[str, Any], path: str) -> tuple[dict[str, Any], Predicate]:
        extra = set(doc) - {"field", "op", "value"}
        if extra:
            raise SegmentRuleError(path, f"unexpected key(s): {', '.join(sorted(extra))}")
        field, op = doc.get("field"), doc.get("op")
        if not isinstance(field, str) or field not in FIELDS:
            raise SegmentRuleError(f"{path}.field", f"unknown field {field!r}; known: "
                                                    f"{', '.join(sorted(FIELDS))}")
        kind = FIELDS[field]
        if op not in OPS[kind]:
            raise SegmentRuleError(f"{path}.op", f"op {op!r} not allowed for {kind} field "
                                                 f"{field!r}; allowed: {', '.join(OPS[kind])}")
        if "value" not in doc:
            raise SegmentRuleError(f"{path}.value", "missing value")
        value = doc["value"]
        self.fields.add(field)
        vpath = f"{path}.value"
        if op == "exists":
            if not isinstance(value, bool):
                raise SegmentRuleError(vpath, "exists takes true or false")
            return (dict(field=field, op=op, value=value),
                    lambda facts: (facts.get(field) is not None) is value)
        if kind == NUMBER:
            return self.number_condition(field, str(op), value, vpath)
        return self.text_condition(field, str(op), value, vpath)

    @staticmethod
    def number_condition(field: str, op: str, value: object,
                         vpath: str) -> tuple[dict[str, Any], Predicate]:
        if op == "between":
            if (not isinstance(value, list) or len(value) != 2
                    or not all(_is_number(v) for v in value)):
                raise SegmentRuleError(vpath, "between takes [low, high] (two numbers)")
            low, high = float(value[0]), float(value[1])
            if low > high:
                raise SegmentRuleError(vpath, "between needs low <= high")

            def between(facts: Facts) -> bool:
                got = _number_of(facts, field)
                return got is not None and low <= got <= high

            return dict(field=field, op=op, value=[low, high]), between
        if not _is_number(value):
            raise SegmentRuleError(vpath, f"{field} compares with a finite number, "
                                          f"got {value!r}")
        bound, compare = float(value), _COMPARE[op]  # type: ignore[arg-type]

        def numeric(facts: Facts) -> bool:
            got = _number_of(facts, field)
            return got is not None and compare(got, bound)

        return dict(field=field, op=op, value=bound), numeric

    @staticmethod
    def text_condition(field: str, op: str, value: object,
                       vpath: str) -> tuple[dict[str, Any], Predicate]:
        if op in ("in", "not_in"):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise SegmentRuleError(vpath, f"{op} takes a list of strings")
            if len(value) > MAX_IN_VALUES:
                raise SegmentRuleError(vpath, f"at most {MAX_IN_VALUES} values")
            options, wanted = frozenset(value), op == "in"

            def member(facts: Facts) -> bool:
                got = _text_of(facts, field)
                return got is not None and (got in options) is wanted

            return dict(field=field, op=op, value=sorted(options)), member
        if not isinstance(value, str):
            raise SegmentRuleError(vpath, f"{field} compares with a string, got {value!r}")
        compare = _COMPARE[op]

        def text(facts: Facts) -> bool:
            got = _text_of(facts, field)
            return got is not None and compare(got, value)

        return dict(field=field, op=op, value=value), text


def compile_rule(doc: object) -> Segment:
    """Validate a rule document; raises ``SegmentRuleError`` (with the JSON path) if bad."""
    compiler = _Compiler()
    normalised, predicate = compiler.node(doc, "rule", 1)
    return Segment(rule=normalised, fields=frozenset(compiler.fields), matches=predicate)


def member_facts(
    *,
    baskets: int | None,
    total_spend: float | None,
    last_purchase_ts: float | None,
    tier: str | None,
    home_store: str | None,
    now: float,
) -> dict[str, Any]:
    """The fields a rule sees for one member (derived ones computed at ``now``)."""
    days: float | None = None
    if last_purchase_ts is not None and _is_number(last_purchase_ts):
        days = max(0.0, (now - float(last_purchase_ts)) / DAY_S)
    mean = None
    if baskets and total_spend is not None:
        mean = float(total_spend) / baskets
    return {
        "baskets": baskets,
        "total_spend": total_spend,
        "mean_basket_spend": mean,
        "days_since_last_purchase": days,
        "tier": tier,
        "home_store": home_store,
    }


def evaluate(segment: Segment, members: Iterable[tuple[str, Facts]]) -> list[str]:
    """Subjects of ``members`` (subject, facts) that are in the segment, in input order."""
    matches = segment.matches
    return [subject for subject, facts in members if matches(facts)]
