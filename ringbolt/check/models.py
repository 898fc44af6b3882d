"""Sequential specifications the checker linearizes against.

Theory of operation
-------------------
A model is a pure sequential object: a state and a step function. Every op of
the register family is a *guarded assignment*: it applies only when the state
equals `expected` (if it is guarded at all) and then sets the state to `new`.

=============  =======  ==========  =========
op             guarded  expected    new
=============  =======  ==========  =========
read -> o      yes      o           o
write v        no       -           v
delete         no       -           absent
cas [e, n]     yes      e           n
=============  =======  ==========  =========

A read is a guarded no-op, so the checker's inner loop is one comparison and
one assignment for every op. The state of a key is its value, `None` when
absent; every key starts absent. `execute` runs an op sequentially against a
state, which is how tests and simulators produce reference outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

State = str | None


class ModelError(ValueError):
    """The history uses an op the chosen model does not define."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Transition:
    guarded: bool
    expected: State
    new: State


@dataclass(frozen=True, slots=True, kw_only=True)
class Model:
    name: str
    functions: frozenset[str]
    initial: State = None

    def transition(self, f: str, invoke_value: Any, ok_value: Any) -> Transition:
        """The guarded assignment of one op; `ok_value` matters only for reads."""
        if f not in self.functions:
            raise ModelError(f"model {self.name!r} does not define f={f!r}")
        if f == "read":
            return Transition(guarded=True, expected=ok_value, new=ok_value)
        if f == "write":
            return Transition(guarded=False, expected=None, new=invoke_value)
        if f == "delete":
            return Transition(guarded=False, expected=None, new=None)
        assert f == "cas", f
        expected, new = invoke_value
        return Transition(guarded=True, expected=expected, new=new)

    def step(self, state: State, transition: Transition) -> tuple[bool, State]:
        """(applies?, next state)."""
        if transition.guarded and state != transition.expected:
            return False, state
        return True, transition.new

    def execute(self, state: State, f: str, invoke_value: Any = None) -> tuple[Any, State]:
        """Run one op sequentially: (its ok output, next state). A cas outputs
        whether it applied; write and delete output None."""
        if f not in self.functions:
            raise ModelError(f"model {self.name!r} does not define f={f!r}")
        if f == "read":
            return state, state
        if f == "cas":
            expected, new = invoke_value
            return (True, new) if state == expected else (False, state)
        return None, (invoke_value if f == "write" else None)


REGISTER = Model(name="register", functions=frozenset({"read", "write", "delete"}))
CAS_REGISTER = Model(name="cas-register", functions=frozenset({"read", "write", "delete", "cas"}))

MODELS: dict[str, Model] = {model.name: model for model in (REGISTER, CAS_REGISTER)}
DEFAULT_MODEL = CAS_REGISTER.name


def model_named(name: str) -> Model:
    try:
        return MODELS[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; choose one of {sorted(MODELS)}") from None
