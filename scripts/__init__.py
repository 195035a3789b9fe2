"""Controller-side tooling: scripts/playbook.py (run a playbook through ansible-runner), demo.py, shell scripts."""
