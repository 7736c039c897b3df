"""What the CPU demo (examples/run_depo_cpu.sh) needs besides verl on CPU: the tiny warm-started
policy it trains and the summary it prints. How verl itself runs on CPU is ``recipe.depo.cpu``."""
