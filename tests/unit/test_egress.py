"""The outbound allowlist's rules, without a network: patterns, CIDRs, link-local."""

from __future__ import annotations

import pytest

from modelrollout.egress import DEFAULT, AddressNotAllowed, AddressPolicy


def test_patterns_and_cidrs_parse_and_print_back() -> None:
    policy = AddressPolicy.parse(" *.svc , prometheus.example.com,10.0.0.0/8,::1/128,, ")
    assert policy.patterns == ("*.svc", "prometheus.example.com")
    assert str(policy) == "*.svc,prometheus.example.com,10.0.0.0/8,::1/128"


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "http://x", "a b", "prom:9090"])
def test_a_bad_rule_is_refused_naming_it(bad: str) -> None:
    with pytest.raises(ValueError, match="allowed address"):
        AddressPolicy.parse(f"*.svc,{bad}")


def test_the_default_admits_in_cluster_service_names_only() -> None:
    policy = AddressPolicy.parse(DEFAULT)
    policy.check_addresses("prometheus.monitoring.svc", ["10.96.0.12"])
    policy.check_addresses("prometheus.monitoring.svc.cluster.local", ["10.96.0.12"])
    for host, address in (("127.0.0.1", "127.0.0.1"), ("evil.example.com", "93.184.216.34")):
        with pytest.raises(AddressNotAllowed, match=r"\*\.svc,\*\.svc\.cluster\.local"):
            policy.check_addresses(host, [address])


def test_a_name_no_pattern_admits_needs_every_address_in_a_cidr() -> None:
    policy = AddressPolicy.parse("127.0.0.0/8")
    policy.check_addresses("localhost", ["127.0.0.1"])
    with pytest.raises(AddressNotAllowed, match="localhost resolves to ::1"):
        policy.check_addresses("localhost", ["127.0.0.1", "::1"])


def test_an_allowed_name_may_not_lead_to_a_metadata_service() -> None:
    """An ExternalName Service can make a `.svc` name resolve anywhere."""
    policy = AddressPolicy.parse("*.svc")
    with pytest.raises(AddressNotAllowed, match=r"resolves to 169\.254\.169\.254"):
        policy.check_addresses("metadata.default.svc", ["169.254.169.254"])
    AddressPolicy.parse("*.svc,169.254.169.254/32").check_addresses(
        "metadata.default.svc", ["169.254.169.254"]
    )


def test_a_url_whose_pattern_matches_is_admitted_before_any_lookup() -> None:
    AddressPolicy.parse("*.svc").check_url("http://no-such-service.nowhere.svc:9090")
    with pytest.raises(AddressNotAllowed):
        AddressPolicy.parse("*.svc").check_url("https://[::1]:9090/prom")
