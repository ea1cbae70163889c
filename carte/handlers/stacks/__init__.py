"""Stacks: the reconciler that keeps a Compose manifest's services running, rollouts and
readiness.
"""

from carte.handlers.stacks._handler import StacksHandler

__all__ = ["StacksHandler"]
