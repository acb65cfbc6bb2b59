"""The evaluation task names, apart from their loaders and metrics (which import torch), so that a
config can be checked without them."""

SIGNAL_TASKS = ("humaneval", "mbpp", "gsm8k", "code")  # likelihood curves (eval/curves.py)
