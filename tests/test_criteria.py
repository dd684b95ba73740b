"""The criteria model: YAML form in and out, interval semantics, clear errors."""

from __future__ import annotations

from decimal import Decimal

import pytest

from fhir_adapter.criteria import Combination, Criterion, CriterionError, Rule, Window, definition_from_dict


@pytest.mark.parametrize(("spec", "inside", "outside"), [
    ({"range": [18, 50]}, ["18", "50"], ["17", "51"]),
    ({"below": 60}, ["59.9"], ["60", "61"]),
    ({"at-least": 1}, ["1", "4"], ["0"]),
    ({"above": 2}, ["2.5"], ["2"]),
    ({"at-most": 0}, ["0"], ["1"]),
])
def test_interval_bounds(spec, inside, outside):
    rule = Rule.from_dict({"fact": "lab-value", "subject": "egfr", **spec})
    assert all(rule.accepts(Decimal(v)) for v in inside)
    assert not any(rule.accepts(Decimal(v)) for v in outside)
    assert Rule.from_dict(rule.to_dict()) == rule


def test_coded_and_boolean_rules():
    subtype = Rule.from_dict({"fact": "ms-subtype", "any-of": ["rrms", "spms"]})
    assert subtype.accepts("spms") and not subtype.accepts("ppms")
    washout = Rule.from_dict({"fact": "therapy", "subject": "immunosuppressants", "window": "3 mo", "present": True})
    assert washout.window == Window(3, "mo") and washout.accepts(True) and not washout.accepts(False)


def test_combinations_nest_and_round_trip():
    data = {"any-of": [{"fact": "ms-subtype", "any-of": ["rrms"]},
                       {"all-of": [{"fact": "ms-subtype", "any-of": ["spms"]},
                                   {"fact": "relapse-count", "window": "18 mo", "at-least": 1}]}]}
    definition = definition_from_dict(data)
    assert isinstance(definition, Combination) and isinstance(definition.parts[1], Combination)
    assert definition.to_dict() == data


def test_children_combine_and_inherit_kind():
    c = Criterion.from_dict({"linkId": "inc-1", "kind": "inclusion", "text": "Inflammatory forms of MS",
                             "combine": "any-of", "children": [
                                 {"linkId": "inc-1a", "text": "RRMS",
                                  "rule": {"fact": "ms-subtype", "any-of": ["rrms"]}},
                                 {"linkId": "inc-1b", "text": "SPMS with relapses"}]})
    assert [x.link_id for x in c.walk()] == ["inc-1", "inc-1a", "inc-1b"]
    assert c.children[1].kind == "inclusion" and not c.computable and c.children[0].computable
    assert Criterion.from_dict(c.to_dict()) == c


@pytest.mark.parametrize(("data", "message"), [
    ({"fact": "edss"}, "is a number"),
    ({"fact": "edss", "range": [3, 6.5], "window": "2 fortnights"}, "window"),
    ({"fact": "age", "range": [18, 50], "window": "1 a"}, "takes no window"),
    ({"fact": "therapy", "present": True}, "needs a subject"),
    ({"fact": "lucky", "present": True}, "unknown fact 'lucky'"),
    ({"fact": "edss", "range": [3]}, "range is"),
    ({"fact": "edss", "between": [3, 4]}, "unknown keys"),
    ({"fact": "edss", "at-least": "three"}, "not a number"),
])
def test_rule_errors_say_what_is_wrong(data, message):
    with pytest.raises(CriterionError, match=message):
        Rule.from_dict(data)


def test_criterion_errors_name_the_link_id():
    with pytest.raises(CriterionError, match="criterion exc-3.rule: unknown fact"):
        Criterion.from_dict({"linkId": "exc-3", "kind": "exclusion", "text": "x", "rule": {"fact": "nope"}})
    with pytest.raises(CriterionError, match="kind must be"):
        Criterion.from_dict({"linkId": "x-1", "kind": "maybe", "text": "x"})
    with pytest.raises(CriterionError, match="without a linkId"):
        Criterion.from_dict({"kind": "inclusion", "text": "x"})
    with pytest.raises(CriterionError, match="takes combine"):
        Criterion.from_dict({"linkId": "i", "kind": "inclusion", "text": "x",
                             "children": [{"linkId": "j", "text": "y"}]})
