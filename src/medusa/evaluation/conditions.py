"""The ``robustness`` block of the config: its perturbation conditions, checked and described.

Light on purpose (no torch): the workflow reads it at every parse for the condition names and
each perturb job's params. Here:

- ``enabled_section``, ``condition_names``, ``condition_spec``, ``build_condition``: the block
  (``medusa.evaluation.perturb.conditions_from_config``'s shape, plus ``name: {enabled: false}`` to
  leave a condition out in a config merged on top). A babble condition's clips are the training
  partition's clips, an input of the job, so its spec (the rule's params) names their source
  (``BABBLE_SOURCE``) instead of listing them;
- ``spec_json``: every enabled condition's spec, Table R's params;
- ``describe``: a spec in a few words, for Table R's captions.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence

from medusa.evaluation.perturb import Condition, conditions_from_config

CLEAN = "clean"
# Stands for the babble clips in a spec: they are the training partition's clips, an input.
BABBLE_SOURCE = "the training partition's usable clips"


class RobustnessError(ValueError):
    """Inputs of Table R that do not fit together; the message names the file or key."""


def enabled_section(section: Mapping) -> dict:
    """The ``robustness`` block without the conditions set to ``{enabled: false}`` (and
    without that key), in the shape ``conditions_from_config`` reads."""
    section = copy.deepcopy(dict(section))
    conditions = {}
    for name, overrides in (section.get("conditions") or {}).items():
        overrides = dict(overrides or {})
        if overrides.pop("enabled", True) is False:
            continue
        conditions[name] = overrides or None
    section["conditions"] = conditions
    return section


def condition_names(section: Mapping) -> list[str]:
    """The enabled conditions' names, in config order (checked: a bad entry raises)."""
    names = [c.name for c in _conditions(section, [BABBLE_SOURCE])]
    if CLEAN in names:
        raise RobustnessError(f"robustness.conditions.{CLEAN}: names Table R's unperturbed rows")
    return names


def _conditions(section: Mapping, babble_clips: Sequence[str]) -> list[Condition]:
    return conditions_from_config(enabled_section(section), babble_clips=babble_clips)


def condition_spec(section: Mapping, name: str) -> dict:
    """What decides one condition's audio: kind, seed, parameters (a babble's clips named by
    their source, ``BABBLE_SOURCE``): the perturb job's params, so that editing one condition
    reruns only its chain."""
    spec = build_condition(section, name, [BABBLE_SOURCE]).canonical()
    if "clips" in spec["params"]:
        spec["params"]["clips"] = BABBLE_SOURCE
    return spec


def build_condition(section: Mapping, name: str, babble_clips: Sequence[str]) -> Condition:
    """The enabled condition `name` of the block, a babble mixing `babble_clips`."""
    enabled = enabled_section(section)
    if name not in enabled["conditions"]:
        raise RobustnessError(f"robustness.conditions: no enabled condition {name!r}")
    only = {**enabled, "conditions": {name: enabled["conditions"][name]}}
    (condition,) = conditions_from_config(only, babble_clips=babble_clips)
    return condition


def describe(spec: Mapping) -> str:
    """A spec in a few words, e.g. ``noise colour=pink snr_db=10 (seed 0)``."""
    params = " ".join(f"{k}={v}" for k, v in sorted(spec["params"].items()) if k != "clips")
    return f"{spec['kind']} {params} (seed {spec['seed']})".replace("  ", " ")


def spec_json(section: Mapping) -> str:
    """[[condition, spec], ...] of every enabled condition in config order, canonical JSON
    (the table's params; ``dict(json.loads(...))`` reads it back)."""
    specs = [[name, condition_spec(section, name)] for name in condition_names(section)]
    return json.dumps(specs, sort_keys=True, separators=(",", ":"))
