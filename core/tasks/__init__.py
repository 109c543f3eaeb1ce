"""The tasks LandFuse maps: one module each; the engine and training ask them (DESIGN.md §1).

``get_task(name)`` and ``task_of(request)`` find one; :data:`TASKS` lists them in the order the
surfaces show them. Adding a task is one module here plus its products in
:mod:`landfuse.core.products` and its request type in :mod:`landfuse.core.requests`.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

from .base import InputSlot, SourceGroup, Task
from .change import ChangeTask
from .landcover import LandCoverTask

__all__ = ["TASKS", "InputSlot", "SourceGroup", "Task", "get_task", "task_of"]

_TASKS: Dict[str, Task] = {task.name: task for task in (LandCoverTask(), ChangeTask())}
#: Every task, in the order the surfaces show them.
TASKS: Tuple[Task, ...] = tuple(_TASKS.values())


def get_task(name: str) -> Task:
    """The task called ``name`` (``landcover``, ``change``); KeyError for another."""
    return _TASKS[name]


def task_of(request: Any) -> Task:
    """The task a request belongs to (its ``task`` class attribute)."""
    return _TASKS[getattr(request, "task", "")]
