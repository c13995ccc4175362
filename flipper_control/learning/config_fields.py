"""Which loop config fields change no result: one list for the resume check (``loop``) and ``flipper compare``.

Its own module so that ``compare`` can read it without importing the loop (and with it torch).
"""

from __future__ import annotations

__all__ = ["NO_RESULT_FIELDS", "without_fields"]

# Dotted keys. Where tasks run does not change a result (tasks carry their own seeds); nor does how often the policy
# is also scored on the reality proxy (those scores feed nothing back, so a run resumed with a smaller value adds the
# proxy scores of its finished iterations), nor whether each generator is also judged on same-pose pairs (evaluation
# only: a run resumed with pairs off, or on, judges its later updates so), nor which iteration is deployed (chosen
# after training on held-out proxy worlds: nothing trained depends on it, so a finished run resumed with
# ``transfer.deploy_worlds`` set scores its iterations there and names the deployed one).
NO_RESULT_FIELDS: tuple[str, ...] = ("executor", "workers", "ray_address", "transfer.proxy_eval_every",
                                     "transfer.paired_worlds", "transfer.deploy_worlds", "transfer.deploy_set",
                                     "transfer.deploy_runs")


def without_fields(config: dict, fields: tuple[str, ...]) -> dict:
    """A copy of ``config`` (nested mappings copied too) without the dotted keys in ``fields``."""
    out = {}
    for key, value in config.items():
        if key in fields:
            continue
        inner = tuple(f[len(key) + 1:] for f in fields if f.startswith(key + "."))
        out[key] = without_fields(value, inner) if inner and isinstance(value, dict) else value
    return out
