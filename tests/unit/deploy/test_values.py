"""A topology's Helm values: groups, replicas, worker settings, sinks and image."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from streamfold.deploy.values import (
    WorkerGroup,
    chart_owned_settings,
    connector_directory,
    parse_group,
    read_queries,
    render_values,
    values_yaml,
)
from streamfold.errors import ConfigurationError
from streamfold.runtime.topology import TopicSettings, TopologySpec
from streamfold.sink.spec import ConnectorSpec, load_connector

pytestmark = pytest.mark.unit

CONTEXT = "topologies.retail.domain:retail"
AGGREGATES = ["supplier", "item", "store_stock"]
SAGAS = ["replenishment", "purchase_flow"]
HANDLERS = ["notify_customer"]
ROOT = Path(__file__).resolve().parents[3]


def topology(**changes: object) -> TopologySpec:
    fields: dict[str, object] = {
        "name": "retail",
        "context": CONTEXT,
        "aggregates": AGGREGATES,
        "topics": TopicSettings(partitions=6),
        "worker": {"commit_interval_ms": 100, "max_batch": 1000},
    }
    return TopologySpec.model_validate({**fields, **changes})


def test_one_group_runs_every_aggregate_under_the_topology_name() -> None:
    values = render_values(topology(), AGGREGATES)
    assert values["workers"] == {
        "config": {"commit_interval_ms": 100, "max_batch": 1000},
        "groups": [
            {
                "name": "main",
                "topologyName": "retail",
                "aggregates": AGGREGATES,
                "sagas": [],
                "handlers": [],
                "replicaCount": 3,
            }
        ],
    }
    assert values["topology"] == {
        "name": "retail",
        "context": CONTEXT,
        "partitions": 6,
        "replicationFactor": None,
        "topicPrefix": "",
    }
    assert values["sinks"] == []
    assert values["gateway"] == {"enabled": True, "queries": {}}
    assert "registry" not in values


def test_replicas_default_to_three_but_never_more_than_the_partitions() -> None:
    two = topology(topics=TopicSettings(partitions=2))
    assert render_values(two, AGGREGATES)["workers"]["groups"][0]["replicaCount"] == 2
    assert (
        render_values(topology(), AGGREGATES, replicas=6)["workers"]["groups"][0]["replicaCount"]
        == 6
    )
    with pytest.raises(ConfigurationError, match="--replicas 7: give 1 to 6"):
        render_values(topology(), AGGREGATES, replicas=7)
    with pytest.raises(ConfigurationError, match="--replicas 0"):
        render_values(topology(), AGGREGATES, replicas=0)


def test_groups_split_the_aggregates_and_take_no_topology_name() -> None:
    groups = [parse_group("stock=store_stock"), parse_group("catalog = supplier, item")]
    values = render_values(topology(), AGGREGATES, groups=groups, replicas=2)
    assert values["workers"]["groups"] == [
        {
            "name": "stock",
            "aggregates": ["store_stock"],
            "sagas": [],
            "handlers": [],
            "replicaCount": 2,
        },
        {
            "name": "catalog",
            "aggregates": ["supplier", "item"],
            "sagas": [],
            "handlers": [],
            "replicaCount": 2,
        },
    ]


def test_the_one_group_runs_every_saga_and_handler_the_topology_runs() -> None:
    values = render_values(topology(), AGGREGATES, sagas=SAGAS, handlers=HANDLERS)
    (group,) = values["workers"]["groups"]
    assert group["aggregates"] == AGGREGATES
    assert group["sagas"] == SAGAS
    assert group["handlers"] == HANDLERS


def test_groups_place_sagas_and_handlers_as_they_place_aggregates() -> None:
    groups = [
        parse_group("stock=store_stock,saga:replenishment"),
        parse_group("catalog=supplier, item, saga:purchase_flow"),
        parse_group("notify=handler:notify_customer"),
    ]
    values = render_values(
        topology(), AGGREGATES, sagas=SAGAS, handlers=HANDLERS, groups=groups, replicas=2
    )
    runs = {
        g["name"]: (g["aggregates"], g["sagas"], g["handlers"]) for g in values["workers"]["groups"]
    }
    assert runs == {
        "stock": (["store_stock"], ["replenishment"], []),
        "catalog": (["supplier", "item"], ["purchase_flow"], []),
        "notify": ([], [], ["notify_customer"]),
    }


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        (
            ["a=store_stock,item,supplier,saga:replenishment", "b=handler:notify_customer"],
            "no worker group runs saga:purchase_flow: add it to a --group",
        ),
        (
            ["a=store_stock,item,supplier,saga:replenishment,saga:purchase_flow"],
            "no worker group runs handler:notify_customer: add it to a --group",
        ),
        (
            [
                "a=store_stock,item,supplier,saga:replenishment,saga:purchase_flow",
                "b=saga:replenishment,handler:notify_customer",
            ],
            "saga 'replenishment' is in worker groups 'a' and 'b': put it in one",
        ),
        (
            [
                "a=store_stock,item,supplier,saga:replenishment,saga:purchase_flow",
                "b=handler:notify_customer,handler:notify_customer",
            ],
            "handler 'notify_customer' twice",
        ),
        (
            ["a=store_stock,item,supplier,saga:restock"],
            r"topology 'retail' runs no saga 'restock' \(it runs replenishment, purchase_flow\)",
        ),
        (
            ["a=store_stock,item,supplier,saga:replenishment,saga:purchase_flow,handler:mail"],
            r"runs no handler 'mail' \(it runs notify_customer\)",
        ),
        (
            ["a=store_stock,item,supplier,replenishment"],
            "runs no aggregate 'replenishment' .*; 'replenishment' is a saga:"
            " write saga:replenishment",
        ),
        (
            ["a=store_stock,item,supplier,handler:item"],
            "runs no handler 'item' .*; 'item' is an aggregate: write item",
        ),
    ],
)
def test_groups_must_place_every_saga_and_handler_once(groups: list[str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        render_values(
            topology(),
            AGGREGATES,
            sagas=SAGAS,
            handlers=HANDLERS,
            groups=[parse_group(g) for g in groups],
        )


def test_a_topology_that_runs_no_saga_says_so() -> None:
    with pytest.raises(
        ConfigurationError, match=r"runs no saga 'replenishment' \(it runs no saga\)"
    ):
        render_values(
            topology(),
            AGGREGATES,
            groups=[parse_group("a=store_stock,item,supplier,saga:replenishment")],
        )


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        (["a=store_stock", "b=supplier"], "no worker group runs item: add it to a --group"),
        (
            ["a=store_stock,item", "b=supplier,item"],
            "aggregate 'item' is in worker groups 'a' and 'b'",
        ),
        (["a=store_stock,item,supplier,order"], "runs no aggregate 'order'"),
        (["a=store_stock", "a=supplier,item"], "worker group 'a' is named twice"),
    ],
)
def test_groups_must_place_every_aggregate_once(groups: list[str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        render_values(topology(), AGGREGATES, groups=[parse_group(g) for g in groups])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("store_stock", "write name=aggregate"),
        ("Stock=store_stock", "name: String should match pattern"),
        ("stock=,", "write name=aggregate|aggregates"),
        ("stock=task:x", "'task:x' is no aggregate, saga:name or handler:name"),
        ("stock=saga:", "'saga:' names no saga"),
        ("stock=item,item", "it names aggregate 'item' twice"),
    ],
)
def test_a_bad_group_is_refused_with_the_form_to_use(text: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_group(text)


def test_parse_group_reads_the_name_and_the_aggregates() -> None:
    assert parse_group("hot=store_stock") == WorkerGroup(name="hot", aggregates=("store_stock",))


def test_parse_group_reads_sagas_and_handlers_by_their_kind() -> None:
    assert parse_group(
        "flows = purchase, aggregate:invoice, saga:purchase_flow, handler: notify_customer"
    ) == WorkerGroup(
        name="flows",
        aggregates=("purchase", "invoice"),
        sagas=("purchase_flow",),
        handlers=("notify_customer",),
    )
    assert parse_group("notify=handler:notify_customer") == WorkerGroup(
        name="notify", handlers=("notify_customer",)
    )


def test_settings_the_chart_sets_per_pod_leave_the_config() -> None:
    spec = topology(
        worker={"max_batch": 10, "instance_id": "w1", "state_dir": "/s", "topic_prefix": "qa."}
    )
    values = render_values(spec, AGGREGATES)
    assert values["workers"]["config"] == {"max_batch": 10}
    assert values["topology"]["topicPrefix"] == "qa."
    assert chart_owned_settings(spec) == ["instance_id", "state_dir"]


def test_an_unknown_worker_setting_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="worker has no setting 'max_batchs'"):
        render_values(topology(worker={"max_batchs": 10}), AGGREGATES)


def test_a_sink_keeps_its_spec_but_not_what_the_chart_sets() -> None:
    spec = ConnectorSpec(
        name="retail_audit",
        context=CONTEXT,
        target="http://ch:8123",
        password="secret",  # type: ignore[arg-type]
        database="audit",
        topic_prefix="x.",
    )
    (sink,) = render_values(topology(), AGGREGATES, sinks=[spec])["sinks"]
    assert sink == {
        "name": "retail-audit",
        "connector": {"name": "retail_audit", "context": CONTEXT, "database": "audit"},
    }


def test_the_retail_sink_spec_renders_as_its_file_says() -> None:
    spec = load_connector(ROOT / "connectors" / "retail")
    (sink,) = render_values(topology(), AGGREGATES, sinks=[spec])["sinks"]
    assert sink["connector"] == {
        "name": "retail",
        "context": CONTEXT,
        "database": "retail",
        "batch_rows": 20000,
        "batch_interval_ms": 200,
        "log_interval_ms": 1000,
    }


def test_a_sink_of_another_context_is_refused() -> None:
    spec = ConnectorSpec(name="other", context="shop.domain:shop")
    with pytest.raises(ConfigurationError, match=r"projects shop\.domain:shop, not the topology"):
        render_values(topology(), AGGREGATES, sinks=[spec])


@pytest.mark.parametrize(
    ("reference", "image"),
    [
        ("retail:1.0", {"registry": "", "repository": "retail", "tag": "1.0"}),
        ("acme/retail", {"registry": "", "repository": "acme/retail"}),
        (
            "registry.example.com:5000/acme/retail:2",
            {"registry": "registry.example.com:5000", "repository": "acme/retail", "tag": "2"},
        ),
        (
            "localhost/retail@sha256:abc",
            {"registry": "localhost", "repository": "retail", "digest": "sha256:abc"},
        ),
    ],
)
def test_the_image_reference_becomes_registry_repository_tag_and_digest(
    reference: str, image: dict[str, str]
) -> None:
    assert render_values(topology(), AGGREGATES, image=reference)["image"] == image


def test_connection_options_fill_the_cluster_values() -> None:
    values = render_values(
        topology(),
        AGGREGATES,
        bootstrap_servers="k:9092",
        registry_url="https://sr",
        clickhouse_url="https://ch:8443",
    )
    assert values["kafka"] == {"bootstrapServers": "k:9092"}
    assert values["registry"] == {"enabled": False}
    assert values["registryClient"] == {"url": "https://sr"}
    assert values["clickhouse"] == {"url": "https://ch:8443"}


def test_the_values_file_says_what_to_do_and_reads_back() -> None:
    values = render_values(topology(), AGGREGATES)
    text = values_yaml(values, topology())
    assert text.startswith("# Helm values for topology 'retail'")
    assert "#   helm install retail helm/streamfold -f <this file>\n" in text
    assert yaml.safe_load(text) == values


def test_the_gateway_gets_the_named_queries_or_is_left_out() -> None:
    spec = ConnectorSpec(name="retail", context=CONTEXT)
    queries = {"low_stock": "SELECT 1"}
    values = render_values(topology(), AGGREGATES, sinks=[spec], queries=queries)
    assert values["gateway"] == {"enabled": True, "queries": {"low_stock": "SELECT 1"}}
    assert render_values(topology(), AGGREGATES, gateway=False)["gateway"] == {"enabled": False}
    with pytest.raises(ConfigurationError, match="named queries low_stock need a sink"):
        render_values(topology(), AGGREGATES, queries=queries)


def test_the_queries_are_read_from_the_connector_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "connectors" / "retail"
    (directory / "queries").mkdir(parents=True)
    (directory / "sink.yaml").write_text(f"name: retail\ncontext: {CONTEXT}\n")
    (directory / "queries" / "low_stock.sql").write_text("SELECT 1\n")
    (directory / "queries" / "notes.txt").write_text("not a query")
    monkeypatch.chdir(tmp_path)
    found = {
        "retail": Path("connectors/retail"),
        str(directory): directory,
        str(directory / "sink.yaml"): directory,
    }
    for reference, expected in found.items():
        assert connector_directory(reference) == expected
        assert read_queries(connector_directory(reference)) == {"low_stock": "SELECT 1\n"}
    assert read_queries(tmp_path) == {}
