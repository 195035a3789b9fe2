"""stack_status only reads: the stack it reported healthy is still the one prepare deployed, untouched."""

import json


def test_reported_stack_is_running_and_healthy(host):
    state = json.loads(host.check_output("docker inspect molecule-status-api-1 --format '{{json .State}}'"))
    assert state["Running"] and state["Health"]["Status"] == "healthy"
    assert state["RestartCount"] == 0
