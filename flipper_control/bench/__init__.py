"""Every benchmark of the stack, each measured beside its baseline in the same run (``flipper bench ...``): the
simulator, the policy, the planner (Table III), the DEM builder and the reality proxy. No core module carries
benchmark code."""
