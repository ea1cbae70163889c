"""The cluster's handlers: ``membership`` (here: join, tokens, node records and leases,
leader election); the scheduler and the node agent come beside it.

Other cluster handlers learn about leadership from `GetLeadership` (a `Leadership`: leader,
is_leader, fence) and the `LeaderElected` / `LeadershipLost` facts.
"""

from carte.handlers.cluster._agent import AgentHandler
from carte.handlers.cluster._membership import MembershipHandler
from carte.handlers.cluster._overlay import OverlayHandler
from carte.handlers.cluster._scheduler import SchedulerHandler

__all__ = ["AgentHandler", "MembershipHandler", "OverlayHandler", "SchedulerHandler"]
