"""Stacks: the reconciler that keeps a Compose manifest's services running, rollouts and
readiness.
"""

from carte.handlers.stacks._handler import StacksHandler
from carte.handlers.stacks._start import create_and_start, remove_if_present

__all__ = ["StacksHandler", "create_and_start", "remove_if_present"]
