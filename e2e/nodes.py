"""Fake node pools for the local control plane: pure builders of v1.Node manifests.

kwok manages every node annotated ``kwok.x-k8s.io/node: fake``: it marks it Ready, keeps
its lease alive and plays the kubelet for the pods bound to it (stages in ``e2e/kwok/``).
The API server accepts a node's status on create, so capacity (``nvidia.com/gpu``
included) is set here, and kwok's node-initialize stage keeps it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

POOL_LABEL = "audioproc.io/pool"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}
KWOK_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")

# kwok hands out pod IPs from each node's podCIDR; finished pods keep theirs until they are
# deleted, so every node gets a /20 (4094 addresses) out of this range.
POD_NETWORK = ipaddress.ip_network("10.244.0.0/16")
NODE_POD_PREFIX = 20


@dataclass(frozen=True)
class Pool:
    """One group of identical nodes."""

    name: str  # value of the audioproc.io/pool label, and the node-name stem
    count: int
    cpu: int  # cores
    memory: str  # Kubernetes quantity, e.g. "32Gi"
    gpus: int = 0  # nvidia.com/gpu per node; > 0 also taints the node


@dataclass(frozen=True)
class NodePools:
    """The cluster's node pools. Sizes are parameters; the defaults are the CI cluster."""

    cpu_nodes: int = 2
    gpu_nodes: int = 2
    gpus_per_node: int = 2

    def pools(self) -> list[Pool]:
        return [
            Pool("cpu", self.cpu_nodes, cpu=8, memory="32Gi"),
            Pool("gpu", self.gpu_nodes, cpu=8, memory="64Gi", gpus=self.gpus_per_node),
        ]


def node_manifest(name: str, pool: Pool, pod_cidr: str) -> dict[str, Any]:
    """A kwok-managed v1.Node in ``pool`` (with status, which the API server keeps on create)."""
    resources = {
        "cpu": str(pool.cpu),
        "memory": pool.memory,
        "ephemeral-storage": "100Gi",
        "pods": "110",
    }
    if pool.gpus:
        resources[GPU_RESOURCE] = str(pool.gpus)
    spec: dict[str, Any] = {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]}
    if pool.gpus:
        spec["taints"] = [dict(GPU_TAINT)]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {
                KWOK_NODE_ANNOTATION[0]: KWOK_NODE_ANNOTATION[1],
                "node.alpha.kubernetes.io/ttl": "0",
            },
            "labels": {
                POOL_LABEL: pool.name,
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/os": "linux",
                "kubernetes.io/hostname": name,
                "type": "kwok",
            },
        },
        "spec": spec,
        "status": {
            "capacity": resources,
            "allocatable": dict(resources),
            # nodeInfo is left to kwok's node-initialize stage (the API requires all its fields).
        },
    }


def pool_nodes(pools: NodePools) -> list[dict[str, Any]]:
    """All nodes of all pools, named ``kwok-<pool>-<i>``, each with its own pod CIDR."""
    subnets = POD_NETWORK.subnets(new_prefix=NODE_POD_PREFIX)
    nodes = []
    for pool in pools.pools():
        if pool.count < 0:
            raise ValueError(f"pool {pool.name!r}: node count must be >= 0, got {pool.count}")
        for i in range(pool.count):
            try:
                cidr = str(next(subnets))
            except StopIteration:
                raise ValueError(
                    f"too many nodes for {POD_NETWORK} (one /{NODE_POD_PREFIX} each)"
                ) from None
            nodes.append(node_manifest(f"kwok-{pool.name}-{i}", pool, cidr))
    return nodes
