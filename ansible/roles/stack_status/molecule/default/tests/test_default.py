"""stack_status only reads: the stack it reported healthy is still the one prepare deployed, untouched."""

import json


def test_reported_stack_is_running_and_healthy(host):
    info = json.loads(host.check_output("docker inspect molecule-status-api-blue-1"))[0]
    assert info["State"]["Running"] and info["State"]["Health"]["Status"] == "healthy"
    assert info["RestartCount"] == 0
