"""Planning a full-size run without a GPU: layout checks, parameter count, per-GPU memory, cost.

    plan = plan_run(load_config("configs/codellama-7b/stage1_code.yaml"), nodes=16)
    print(format_plan(plan))            # or: python tools/plan_run.py --config FILE --nodes N
"""

from megacode.planning.memory import H100_USABLE_GIB, MemoryShape, StageMemory, estimate
from megacode.planning.plan import DEFAULT_MFU, Plan, format_plan, plan_run

__all__ = ["DEFAULT_MFU", "H100_USABLE_GIB", "MemoryShape", "Plan", "StageMemory", "estimate", "format_plan",
           "plan_run"]
