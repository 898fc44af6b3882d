"""Linearizable histories by construction, for tests and benchmarks.

Theory of operation
-------------------
Each simulated client process cycles through invoke -> take effect ->
complete, and every step advances one randomly chosen process, so ops overlap
at random. An op takes effect by running the sequential model
(`Model.execute`) at that instant, so the history is linearizable by
construction: the instants are a witness order. Optionally some ops fail
(never take effect; a cas whose precondition does not hold fails too) and
some end indeterminate (``info``): those take effect at a random later step
(possibly after their ``info`` record, as a zombie request would), or never.
Randomness comes only from the injected `random.Random`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ringbolt.check.history import History
from ringbolt.check.models import CAS_REGISTER, Model, State


@dataclass(slots=True)
class _Client:
    op_id: int = -1
    phase: str = "idle"  # "idle" | "invoked" | "applied"
    output: object = None
    f: str = ""


def linearizable_history(
    rng: random.Random,
    *,
    ops_total: int,
    keys: int = 1,
    processes: int = 3,
    functions: tuple[str, ...] = ("read", "write", "cas", "delete"),
    values: int | None = None,
    fail_probability: float = 0.0,
    info_probability: float = 0.0,
    model: Model = CAS_REGISTER,
) -> History:
    """A history of `ops_total` ops over keys "k0".."k{keys-1}".

    `values` bounds the set of written strings (None: every write is unique).
    """
    assert ops_total >= 0
    assert keys >= 1
    assert processes >= 1
    history = History()
    state: dict[str, State] = {f"k{i}": model.initial for i in range(keys)}
    clients = [_Client() for _ in range(processes)]
    zombies: list[tuple[str, str, object]] = []  # effects of info ops still to happen
    written = 0
    while written < ops_total or any(client.phase != "idle" for client in clients):
        if zombies and rng.random() < 0.05:
            key, f, value = zombies.pop(rng.randrange(len(zombies)))
            _, state[key] = model.execute(state[key], f, value)
        process = rng.randrange(processes)
        client = clients[process]
        if client.phase == "idle":
            if written >= ops_total:
                continue
            written += 1
            key = f"k{rng.randrange(keys)}"
            client.f = rng.choice(functions)
            value = _invoke_value(rng, client.f, state[key], written, values)
            client.op_id = history.invoke(process, client.f, key, value)
            client.phase = "invoked"
        elif client.phase == "invoked":
            invoke = history.ops[client.op_id]
            key, value = invoke["key"], invoke["value"]
            roll = rng.random()
            if roll < fail_probability and client.f != "read":
                history.fail(client.op_id)
                client.phase = "idle"
            elif roll < fail_probability + info_probability:
                if rng.random() < 0.5:
                    zombies.append((key, client.f, value))
                history.info(client.op_id)
                client.phase = "idle"
            else:
                client.output, state[key] = model.execute(state[key], client.f, value)
                client.phase = "applied"
        else:
            if client.f == "cas" and client.output is False:
                history.fail(client.op_id)
            else:
                history.ok(client.op_id, client.output if client.f == "read" else None)
            client.phase = "idle"
    return history


def _invoke_value(
    rng: random.Random, f: str, current: State, serial: int, values: int | None
) -> object:
    def fresh() -> str:
        return f"v{serial}" if values is None else f"v{rng.randrange(values)}"

    if f == "write":
        return fresh()
    if f == "cas":
        expected = current if rng.random() < 0.5 else rng.choice([None, fresh()])
        return [expected, fresh()]
    return None
