"""Route ``allow`` rules (SPEC section 2) and the ``/oauth2/auth`` allowed_groups/allowed_emails query (section 3)."""

from __future__ import annotations

from typing import Any

import pytest

from authproxy.config import AllowConfig, parse_config
from authproxy.policy import ALLOW_ANY, Policy, compile_allow, forward_auth_allowed, is_allowed, parse_list

ALICE: dict[str, Any] = {
    "sub": "u-1",
    "email": "Alice@Example.com",
    "email_verified": True,
    "groups": ["admins", "/eng/backend"],
    "department": "eng",
    "level": 3,
    "staff": True,
    "roles": ["reader", "writer"],
}


def claims(**changes: Any) -> dict[str, Any]:
    """ALICE's claims with some changed; a value of ... removes the claim."""
    out = {**ALICE, **changes}
    return {name: value for name, value in out.items() if value is not ...}


CASES = [
    # ---- no rule
    pytest.param(None, ALICE, True, id="no-allow-admits-any-user"),
    pytest.param(AllowConfig(), ALICE, True, id="empty-allow-admits-any-user"),
    pytest.param(None, {"sub": "x"}, True, id="no-allow-needs-no-claims"),
    # ---- emails
    pytest.param(AllowConfig(emails=["alice@example.com"]), ALICE, True, id="email-listed"),
    pytest.param(AllowConfig(emails=["bob@example.com", "alice@example.com"]), ALICE, True, id="email-any-of-list"),
    pytest.param(AllowConfig(emails=["ALICE@EXAMPLE.COM"]), claims(email="alice@example.com"), True, id="email-case"),
    pytest.param(AllowConfig(emails=["bob@example.com"]), ALICE, False, id="email-not-listed"),
    pytest.param(AllowConfig(emails=["alice@example.com"]), claims(email=...), False, id="email-claim-missing"),
    pytest.param(AllowConfig(emails=["alice@example.com"]), claims(email=""), False, id="email-claim-empty"),
    pytest.param(
        AllowConfig(emails=["alice@example.com"]), claims(email=["alice@example.com"]), False, id="email-claim-list"
    ),
    pytest.param(AllowConfig(emails=["alice@example.com"]), claims(email=None), False, id="email-claim-null"),
    pytest.param(
        AllowConfig(emails=["alice@example.com"]), claims(email="alice@example.com.evil"), False, id="email-no-suffix"
    ),
    pytest.param(
        AllowConfig(emails=["alice@example.com"]), claims(email=" alice@example.com"), False, id="email-no-trim"
    ),
    pytest.param(
        # KELVIN SIGN lowercases to "k" under Unicode rules: it must not pass for kate@
        AllowConfig(emails=["kate@example.com"]),
        claims(email="\u212aate@example.com"),
        False,
        id="email-unicode-case-folding-refused",
    ),
    pytest.param(AllowConfig(emails=[]), ALICE, False, id="email-empty-list-admits-nobody"),
    # ---- email_verified
    pytest.param(AllowConfig(emails=["alice@example.com"]), claims(email_verified=False), False, id="unverified"),
    pytest.param(
        AllowConfig(emails=["alice@example.com"]), claims(email_verified="false"), False, id="unverified-string"
    ),
    pytest.param(AllowConfig(emails=["alice@example.com"]), claims(email_verified=None), False, id="verified-null"),
    pytest.param(AllowConfig(emails=["alice@example.com"]), claims(email_verified=1), False, id="verified-number"),
    pytest.param(AllowConfig(emails=["alice@example.com"]), claims(email_verified="true"), True, id="verified-string"),
    pytest.param(AllowConfig(emails=["alice@example.com"]), claims(email_verified=...), True, id="verified-absent"),
    pytest.param(
        AllowConfig(email_domains=["example.com"]), claims(email_verified=False), False, id="unverified-domain"
    ),
    pytest.param(AllowConfig(groups=["admins"]), claims(email_verified=False), True, id="unverified-irrelevant-groups"),
    # ---- email_domains
    pytest.param(AllowConfig(email_domains=["example.com"]), ALICE, True, id="domain-listed"),
    pytest.param(AllowConfig(email_domains=["EXAMPLE.COM"]), ALICE, True, id="domain-case"),
    pytest.param(AllowConfig(email_domains=["other.org", "example.com"]), ALICE, True, id="domain-any-of-list"),
    pytest.param(
        AllowConfig(email_domains=["example.com"]), claims(email="a@sub.example.com"), False, id="no-subdomain"
    ),
    pytest.param(AllowConfig(email_domains=["example.com"]), claims(email="a@badexample.com"), False, id="no-suffix"),
    pytest.param(AllowConfig(email_domains=["example.com"]), claims(email="a@example.com.evil"), False, id="no-prefix"),
    pytest.param(
        AllowConfig(email_domains=["*.example.com"]), claims(email="a@x.example.com"), False, id="no-wildcard"
    ),
    pytest.param(AllowConfig(email_domains=["*"]), ALICE, False, id="star-is-not-special"),
    pytest.param(
        AllowConfig(email_domains=["example.com"]), claims(email='"x@evil.org"@example.com'), True, id="last-at-quoted"
    ),
    pytest.param(
        AllowConfig(email_domains=["evil.org"]), claims(email="x@evil.org@example.com"), False, id="last-at-counts"
    ),
    pytest.param(AllowConfig(email_domains=["example.com"]), claims(email="example.com"), False, id="no-at-sign"),
    pytest.param(AllowConfig(email_domains=["example.com"]), claims(email="@example.com"), False, id="no-local-part"),
    pytest.param(AllowConfig(email_domains=["example.com"]), claims(email=...), False, id="domain-claim-missing"),
    pytest.param(AllowConfig(email_domains=[]), ALICE, False, id="domain-empty-list-admits-nobody"),
    # ---- groups
    pytest.param(AllowConfig(groups=["admins"]), ALICE, True, id="group-listed"),
    pytest.param(AllowConfig(groups=["ops", "/eng/backend"]), ALICE, True, id="group-any-of-list"),
    pytest.param(AllowConfig(groups=["ops"]), ALICE, False, id="group-not-listed"),
    pytest.param(AllowConfig(groups=["Admins"]), ALICE, False, id="group-case-sensitive"),
    pytest.param(AllowConfig(groups=["admins"]), claims(groups="admins"), True, id="group-claim-string"),
    pytest.param(AllowConfig(groups=["admins"]), claims(groups="admins,ops"), False, id="group-string-not-split"),
    pytest.param(AllowConfig(groups=["admins"]), claims(groups=[]), False, id="group-claim-empty-list"),
    pytest.param(AllowConfig(groups=["admins"]), claims(groups=...), False, id="group-claim-missing"),
    pytest.param(AllowConfig(groups=["admins"]), claims(groups={"admins": True}), False, id="group-claim-object"),
    pytest.param(AllowConfig(groups=["admins"]), claims(groups=[["admins"]]), False, id="group-nested-list-ignored"),
    pytest.param(AllowConfig(groups=["42"]), claims(groups=[42, "x"]), True, id="group-numeric-id"),
    pytest.param(AllowConfig(groups=[]), ALICE, False, id="group-empty-list-admits-nobody"),
    # ---- claims
    pytest.param(AllowConfig(claims={"department": ["eng", "ops"]}), ALICE, True, id="claim-string"),
    pytest.param(AllowConfig(claims={"department": ["sales"]}), ALICE, False, id="claim-string-not-listed"),
    pytest.param(AllowConfig(claims={"department": ["ENG"]}), ALICE, False, id="claim-case-sensitive"),
    pytest.param(AllowConfig(claims={"level": ["3"]}), ALICE, True, id="claim-integer"),
    pytest.param(AllowConfig(claims={"level": ["3"]}), claims(level=3.0), True, id="claim-integral-float"),
    pytest.param(AllowConfig(claims={"level": ["3"]}), claims(level=3.5), False, id="claim-fraction"),
    pytest.param(AllowConfig(claims={"level": ["3.5"]}), claims(level=3.5), True, id="claim-fraction-listed"),
    pytest.param(AllowConfig(claims={"staff": ["true"]}), ALICE, True, id="claim-bool-true"),
    pytest.param(AllowConfig(claims={"staff": ["1"]}), ALICE, False, id="claim-bool-is-not-1"),
    pytest.param(AllowConfig(claims={"staff": ["True"]}), ALICE, False, id="claim-bool-json-spelling"),
    pytest.param(AllowConfig(claims={"staff": ["false"]}), claims(staff=False), True, id="claim-bool-false"),
    pytest.param(AllowConfig(claims={"roles": ["writer"]}), ALICE, True, id="claim-list"),
    pytest.param(AllowConfig(claims={"roles": ["admin"]}), ALICE, False, id="claim-list-no-overlap"),
    pytest.param(AllowConfig(claims={"roles": ["1"]}), claims(roles=[True, 1]), True, id="claim-list-mixed-scalars"),
    pytest.param(AllowConfig(claims={"missing": ["x"]}), ALICE, False, id="claim-missing"),
    pytest.param(AllowConfig(claims={"department": ["eng"]}), claims(department=None), False, id="claim-null"),
    pytest.param(
        AllowConfig(claims={"address": ["x"]}), claims(address={"country": "x"}), False, id="claim-object-refused"
    ),
    pytest.param(
        AllowConfig(claims={"department": ["eng"], "roles": ["writer"]}), ALICE, True, id="claims-all-names-pass"
    ),
    pytest.param(
        AllowConfig(claims={"department": ["eng"], "roles": ["admin"]}), ALICE, False, id="claims-one-name-fails"
    ),
    pytest.param(AllowConfig(claims={"department": []}), ALICE, False, id="claim-empty-list-admits-nobody"),
    pytest.param(AllowConfig(claims={}), ALICE, True, id="claims-empty-mapping-adds-no-condition"),
    # ---- combinations: AND across kinds
    pytest.param(
        AllowConfig(emails=["alice@example.com"], groups=["admins"]), ALICE, True, id="email-and-group-both-pass"
    ),
    pytest.param(AllowConfig(emails=["alice@example.com"], groups=["ops"]), ALICE, False, id="email-ok-group-fails"),
    pytest.param(AllowConfig(emails=["bob@example.com"], groups=["admins"]), ALICE, False, id="group-ok-email-fails"),
    pytest.param(
        AllowConfig(emails=["alice@example.com"], email_domains=["other.org"]), ALICE, False, id="email-ok-domain-fails"
    ),
    pytest.param(
        AllowConfig(email_domains=["example.com"], claims={"department": ["ops"]}),
        ALICE,
        False,
        id="domain-ok-claim-fails",
    ),
    pytest.param(
        AllowConfig(
            emails=["alice@example.com"],
            email_domains=["example.com"],
            groups=["admins"],
            claims={"department": ["eng"], "staff": ["true"]},
        ),
        ALICE,
        True,
        id="every-kind-passes",
    ),
    pytest.param(
        AllowConfig(email_domains=["example.com"], groups=["admins"]),
        claims(email=...),
        False,
        id="group-ok-email-missing",
    ),
]


@pytest.mark.parametrize(("allow", "user", "expected"), CASES)
def test_allow_rules(allow: AllowConfig | None, user: dict[str, Any], expected: bool) -> None:
    assert is_allowed(allow, user) is expected
    assert compile_allow(allow).allows(user) is expected


@pytest.mark.parametrize(("allow", "user", "expected"), CASES)
def test_refusal_is_given_exactly_when_the_rule_refuses(
    allow: AllowConfig | None, user: dict[str, Any], expected: bool
) -> None:
    refusal = compile_allow(allow).refusal(user)
    assert (refusal is None) is expected, refusal


@pytest.mark.parametrize(
    ("allow", "user", "kind", "requirement"),
    [
        pytest.param(
            AllowConfig(groups=["admins"]), claims(groups=["dev"]), "groups", "requires group admins", id="group"
        ),
        pytest.param(
            AllowConfig(groups=["ops", "admins"]),
            claims(groups=...),
            "groups",
            "requires group one of admins, ops",
            id="groups-missing",
        ),
        pytest.param(
            AllowConfig(email_domains=["corp.example"]),
            ALICE,
            "email_domains",
            "requires an email address at corp.example",
            id="domain",
        ),
        pytest.param(
            AllowConfig(emails=["bob@example.com"]),
            ALICE,
            "emails",
            "requires one of the email addresses this application allows",
            id="emails-not-listed-by-name",
        ),
        pytest.param(
            AllowConfig(emails=["alice@example.com"]),
            claims(email_verified=False),
            "email",
            "requires a verified email address",
            id="unverified",
        ),
        pytest.param(
            AllowConfig(claims={"department": ["ops"]}),
            ALICE,
            "claims",
            "requires claim department to be ops",
            id="claim",
        ),
        pytest.param(
            AllowConfig(email_domains=["example.com"], groups=["auditors"]),
            ALICE,
            "groups",
            "requires group auditors",
            id="names-the-kind-that-failed",
        ),
    ],
)
def test_refusal_names_the_failed_kind(allow: AllowConfig, user: dict[str, Any], kind: str, requirement: str) -> None:
    refusal = compile_allow(allow).refusal(user)
    assert refusal is not None
    assert (refusal.kind, refusal.requirement) == (kind, requirement)
    # never another user's address
    assert "bob@" not in refusal.requirement


def test_rules_from_yaml_config_behave_like_the_models() -> None:
    text = """
provider: {issuer: https://idp.example.com, client_id: c, client_secret: s}
server: {public_url: https://app.example.com}
session: {secrets: ["0123456789abcdef0123456789abcdef"]}
routes:
  - name: admin
    upstream: http://127.0.0.1:8081
    allow:
      email_domains: [Example.com]
      claims: {department: [eng, ops], staff: ["true"]}
"""
    policy = compile_allow(parse_config(text).routes[0].allow)
    assert policy.allows(ALICE)
    assert not policy.allows(claims(department="sales"))


def test_compiled_policy_is_frozen_and_hashable() -> None:
    policy = compile_allow(AllowConfig(emails=["A@x.org"], claims={"b": ["2"], "a": ["1"]}))
    with pytest.raises(AttributeError):
        policy.emails = None  # type: ignore[misc]
    assert policy.emails == frozenset({"a@x.org"})
    # claim order in the file does not matter: the same rule compiles to an equal policy
    assert policy == compile_allow(AllowConfig(emails=["a@X.ORG"], claims={"a": ["1"], "b": ["2"]}))
    assert hash(policy) == hash(compile_allow(AllowConfig(emails=["a@X.ORG"], claims={"a": ["1"], "b": ["2"]})))


@pytest.mark.parametrize(
    ("allow", "unrestricted"),
    [
        pytest.param(None, True, id="none"),
        pytest.param(AllowConfig(), True, id="empty"),
        pytest.param(AllowConfig(claims={}), True, id="empty-claims"),
        pytest.param(AllowConfig(groups=[]), False, id="empty-groups-is-a-rule"),
        pytest.param(AllowConfig(emails=["a@b"]), False, id="emails"),
        pytest.param(AllowConfig(claims={"a": ["b"]}), False, id="claims"),
    ],
)
def test_unrestricted(allow: AllowConfig | None, unrestricted: bool) -> None:
    assert compile_allow(allow).unrestricted is unrestricted
    assert (compile_allow(allow) == ALLOW_ANY) is unrestricted


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(None, None, id="absent"),
        pytest.param("", None, id="empty"),
        pytest.param(" , ,", None, id="only-separators"),
        pytest.param("admins", ["admins"], id="one"),
        pytest.param("a,b", ["a", "b"], id="two"),
        pytest.param(" a , b ,, c ", ["a", "b", "c"], id="spaces-and-empties"),
        pytest.param("a b,c", ["a b", "c"], id="inner-space-kept"),
        pytest.param("/eng/backend,admins", ["/eng/backend", "admins"], id="group-paths"),
    ],
)
def test_parse_list(value: str | None, expected: list[str] | None) -> None:
    assert parse_list(value) == expected


@pytest.mark.parametrize(
    ("user", "allowed_groups", "allowed_emails", "expected"),
    [
        pytest.param(ALICE, None, None, True, id="no-restriction"),
        pytest.param(ALICE, [], [], True, id="empty-lists-are-no-restriction"),
        pytest.param(ALICE, ["ops", "admins"], None, True, id="group-any-of"),
        pytest.param(ALICE, ["ops"], None, False, id="group-not-met"),
        pytest.param(claims(groups=...), ["admins"], None, False, id="group-claim-missing"),
        pytest.param(ALICE, None, ["ALICE@example.com"], True, id="email-case-insensitive"),
        pytest.param(ALICE, None, ["bob@example.com"], False, id="email-not-met"),
        pytest.param(claims(email_verified=False), None, ["alice@example.com"], False, id="email-unverified"),
        pytest.param(ALICE, ["admins"], ["alice@example.com"], True, id="both-met"),
        pytest.param(ALICE, ["admins"], ["bob@example.com"], False, id="both-given-email-fails"),
        pytest.param(ALICE, ["ops"], ["alice@example.com"], False, id="both-given-group-fails"),
    ],
)
def test_forward_auth_allowed(
    user: dict[str, Any], allowed_groups: list[str] | None, allowed_emails: list[str] | None, expected: bool
) -> None:
    assert forward_auth_allowed(user, allowed_groups, allowed_emails) is expected


@pytest.mark.parametrize(
    ("query_groups", "query_emails", "expected"),
    [
        pytest.param("ops, admins", None, True, id="groups"),
        pytest.param("ops,", None, False, id="groups-not-met"),
        pytest.param("", "", True, id="empty-parameters"),
        pytest.param(None, "bob@example.com,alice@example.com", True, id="emails"),
    ],
)
def test_forward_auth_query_end_to_end(query_groups: str | None, query_emails: str | None, expected: bool) -> None:
    assert forward_auth_allowed(ALICE, parse_list(query_groups), parse_list(query_emails)) is expected


def test_policy_can_be_built_directly() -> None:
    assert Policy(groups=frozenset({"admins"})).allows(ALICE)
    assert not Policy(groups=frozenset({"ops"})).allows(ALICE)
