"""What the CPU demo (examples/run_depo_cpu.sh) needs besides verl on CPU: the tiny warm-started
policy it trains (its report is ``recipe.depo.report``). How verl itself runs on CPU is ``recipe.depo.cpu``."""
