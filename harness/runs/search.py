"""MLflow runs found by exact tag values that may hold any character (a sweep's study name is the user's): each
value quoted with a quote it does not contain, and every run checked again here, since MLflow's filter strings
have no escape for a quote (a value holding both kinds is matched here only)."""

from __future__ import annotations

from typing import Any


def quoted(value: str) -> str | None:
    """``value`` as a literal of MLflow's filter strings, or None when no quoting can hold it."""
    if "'" not in value and not value.endswith("\\"):
        return f"'{value}'"
    if '"' not in value and not value.endswith("\\"):
        return f'"{value}"'
    return None


def tag_filter(tags: dict[str, Any], extra: str = "") -> tuple[str, bool]:
    """The filter string for ``tags.KEY = VALUE`` of each tag (and ``extra``); and whether every tag is in it."""
    clauses, complete = [], True
    for key, value in tags.items():
        literal = quoted(str(value))
        if literal is None:
            complete = False
        else:
            clauses.append(f"tags.{key} = {literal}")
    return " and ".join([*clauses, *([extra] if extra else [])]), complete


def search_tagged(c, experiment_ids: list[str], tags: dict[str, Any], extra: str = "", **kw) -> list:
    """``c.search_runs`` of the runs whose tags are exactly ``tags`` (and match ``extra``, a filter of our own)."""
    filter_string, complete = tag_filter(tags, extra)
    limit = kw.get("max_results")
    if not complete:
        kw.pop("max_results", None)  # some runs found may not match: look at all of them
    runs = c.search_runs(experiment_ids, filter_string=filter_string, **kw)
    wanted = {k: str(v) for k, v in tags.items()}
    return [r for r in runs if all(r.data.tags.get(k) == v for k, v in wanted.items())][:limit]
