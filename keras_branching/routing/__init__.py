"""Share routing (MTNAS): routing plans, their builder, and the search.

See `docs/methods/share_routing.md` and section 3 of the methods page.
"""

from keras_branching.routing.builder import RoutingModelBuilder
from keras_branching.routing.plan import RoutingPlan
from keras_branching.routing.search import ShareRouting

__all__ = ["RoutingModelBuilder", "RoutingPlan", "ShareRouting"]
