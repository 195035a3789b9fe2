# Mitogen's linear strategy under a name ansible.cfg can point at without knowing where the venv lives
# (Mitogen's documented set-up names the path inside site-packages). Mitogen keeps one Python interpreter per
# host for the whole run instead of shipping and starting a fresh one for every task: deploys take about half the
# time (make bench-deploy). Run without it: ANSIBLE_STRATEGY=linear.
from ansible_mitogen.plugins.strategy.mitogen_linear import StrategyModule  # noqa: F401 (re-exported)
