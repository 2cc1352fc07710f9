"""Scenario files: schema, loading with line numbers, JSON Schema export.  Pure."""
from .loader import LoadedScenario, load_scenario, parse_scenario, split_endpoint
from .schema import (
    Bridge,
    Container,
    Expect,
    External,
    HostConfig,
    Limits,
    Network,
    Nic,
    Publish,
    Scenario,
    Service,
    Step,
    Upstream,
)

__all__ = [
    "LoadedScenario", "load_scenario", "parse_scenario", "split_endpoint", "Bridge", "Container",
    "Expect", "External", "HostConfig", "Limits", "Network", "Nic", "Publish", "Scenario", "Service", "Step",
    "Upstream", "json_schema",
]


def json_schema() -> dict[str, object]:
    """The JSON Schema of a scenario file (for editors and `netsim schema`)."""
    return Scenario.model_json_schema(by_alias=True)
