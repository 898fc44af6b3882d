"""Bounds of a Jepsen run: every wait, loop and count of the harness is capped here."""

from __future__ import annotations

nodes_max = 9
"""Namespaces per run; the subnet has room for 253, the cores are the limit."""

command_timeout_s = 10.0
"""One `ip`/`tc` command."""

run_time_s_max = 3_600.0
"""`--time` of one run."""

runs_max = 100
"""`--runs`."""

node_start_timeout_s = 30.0
"""A node process answering its admin `/status`."""

op_timeout_s = 2.0
"""One client operation; a write that takes longer is indeterminate (info)."""

clients_per_node = 2
"""Client processes bound to each node."""

client_pause_s = 0.01
"""Between two ops of one client (keeps histories checkable)."""

fault_hold_s = (2.0, 5.0)
"""How long one nemesis fault lasts (uniform)."""

quiet_s = (1.0, 3.0)
"""Healthy gap between two faults (uniform)."""

final_quiet_s = 3.0
"""Faults stop this long before the workload ends; the cluster must heal."""

converge_timeout_s = 30.0
"""After the final heal: a leader and every node caught up."""

final_read_attempts = 20
"""Final reads are retried at most this often (each bounded by op_timeout_s)."""

check_time_limit_s = 60.0
"""The linearizability search of one run."""

history_ops_max = 200_000
"""Invocations per run; the workload stops invoking at the limit."""

set_final_read_batch = 200
"""Keys per pipelined final read of the set workload."""

assert fault_hold_s[0] <= fault_hold_s[1]
assert quiet_s[0] <= quiet_s[1]
assert final_quiet_s > 0
