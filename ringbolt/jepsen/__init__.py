"""Jepsen-style fault testing of real node processes in network namespaces.

- `netns`: test hosts (namespaces, veths, bridge), partitions, slow links, cleanup.
- `cluster`: node processes inside the namespaces (start, kill, pause, status).
- `nemesis`: seeded fault schedule; every fault logged and healed.
- `workload`: register and set clients recording a checkable history.
- `report`: availability, recovery times, run directory, timeline plot.
- `runner`, `cli`: one run and a series; `ringbolt jepsen`.
"""
