"""Node-pool manifests (pure builders, no cluster needed)."""

import ipaddress

import pytest

from e2e.nodes import GPU_RESOURCE, POOL_LABEL, NodePools, pool_nodes


def by_pool(nodes):
    pools = {}
    for node in nodes:
        pools.setdefault(node["metadata"]["labels"][POOL_LABEL], []).append(node)
    return pools


def test_default_pools_match_the_ci_cluster():
    pools = by_pool(pool_nodes(NodePools()))

    assert [n["metadata"]["name"] for n in pools["cpu"]] == ["kwok-cpu-0", "kwok-cpu-1"]
    assert [n["metadata"]["name"] for n in pools["gpu"]] == ["kwok-gpu-0", "kwok-gpu-1"]
    for node in pools["cpu"]:
        assert node["status"]["capacity"]["cpu"] == "8"
        assert node["status"]["capacity"]["memory"] == "32Gi"
        assert GPU_RESOURCE not in node["status"]["capacity"]
        assert "taints" not in node["spec"]
    for node in pools["gpu"]:
        assert node["status"]["capacity"]["memory"] == "64Gi"
        assert node["status"]["allocatable"][GPU_RESOURCE] == "2"
        assert node["spec"]["taints"] == [
            {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}
        ]


def test_every_node_is_kwok_managed_with_its_own_pod_cidr():
    nodes = pool_nodes(NodePools(cpu_nodes=3, gpu_nodes=4, gpus_per_node=8))

    assert all(n["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake" for n in nodes)
    cidrs = [ipaddress.ip_network(n["spec"]["podCIDR"]) for n in nodes]
    assert len(cidrs) == 7
    assert not any(a.overlaps(b) for i, a in enumerate(cidrs) for b in cidrs[i + 1 :])
    assert {n["status"]["capacity"].get(GPU_RESOURCE) for n in by_pool(nodes)["gpu"]} == {"8"}


def test_pool_sizes_are_parameters():
    assert pool_nodes(NodePools(cpu_nodes=0, gpu_nodes=0)) == []
    with pytest.raises(ValueError, match="node count"):
        pool_nodes(NodePools(cpu_nodes=-1))
    with pytest.raises(ValueError, match="too many nodes"):
        pool_nodes(NodePools(cpu_nodes=17, gpu_nodes=0))
