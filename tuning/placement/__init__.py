"""Model placement: the former tuning/placement.py, renamed to solver.py on the way to one
module per concern (the next commit splits it)."""

from tuning.placement.solver import (  # noqa: F401 - the package's public names
    _SUM_LIMIT,
    GpuHint,
    Placement,
    Plan,
    Problem,
    ProfileHints,
    _priority_sums,
    brute_force,
    build_problem,
    group_throughput,
    load_plan,
    load_profile_hints,
    make_plan,
    plan,
    solve,
)
