"""The release's decisions (the release role's filters: filter_plugins/release.py), state by state.

These are the filters the role calls, imported from its directory; the tasks that carry the plans out are exercised
for real by molecule and the e2e tier.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess

import pytest
from ansible.errors import AnsibleFilterError

from tests.role_plugins import ROLES, role_plugin

release = role_plugin("release/filter_plugins/release.py")

COLORS = ["blue", "green"]
NOW = "20261202T050000Z"
A, B = "sha-aaaaaaa", "sha-bbbbbbb"


def container(tag: str, release: str = "") -> dict:
    return {"tag": tag, "release": release or f"20261201T000000Z-{tag}", "running": True, "health": "healthy"}


def observed(color="", containers=None, proxy_running=True, ready_status=200, served_color=None) -> dict:
    served = color if served_color is None else served_color
    status = ready_status if containers and proxy_running else -1
    return {
        "color": color,
        "containers": containers or {},
        "proxy_running": proxy_running,
        "answered": status == 200 and served == color and bool(color),
        "ready_status": status,
        "served_color": served,
    }


def plan(obs, tag=B, **kwargs):
    return release.release_plan(obs, tag, COLORS, NOW, **kwargs)


def test_first_deploy_cuts_over_to_blue_and_clears_an_old_layout():
    p = plan(observed(), in_sync=None)
    assert (p["action"], p["new_color"], p["live_color"]) == ("cutover", "blue", "")
    assert p["restore_slots"] == {}
    assert p["gate_slots"] == p["final_slots"] == {"blue": {"tag": B, "release": f"{NOW}-{B}"}}
    assert p["remove_orphans_on_switch"] is True and p["retire"] == []
    assert p["reason"] == "nothing serves yet"


def test_new_tag_goes_to_the_other_colour_beside_the_live_one():
    live = container(A)
    p = plan(observed("blue", {"blue": live}))
    assert (p["action"], p["new_color"], p["previous_tag"]) == ("cutover", "green", A)
    assert p["restore_slots"] == {"blue": {"tag": A, "release": live["release"]}}
    assert p["gate_slots"] == {
        "blue": {"tag": A, "release": live["release"]},
        "green": {"tag": B, "release": f"{NOW}-{B}"},
    }
    assert p["final_slots"] == {"green": {"tag": B, "release": f"{NOW}-{B}"}}
    assert p["remove_orphans_on_switch"] is False and p["retire"] == ["blue"]
    assert f"{A} serves, {B} is asked for" in p["reason"]


def test_same_tag_healthy_and_recorded_is_nothing_to_do():
    live = container(B)
    p = plan(observed("green", {"green": live}), in_sync=True, last_success=B)
    assert p["action"] == "nothing"
    assert p["release"] == live["release"], "a re-run keeps the release id, so the files stay byte-identical"
    assert "nothing to do" in p["reason"]


def test_same_tag_but_new_settings_cuts_over():
    p = plan(observed("green", {"green": container(B)}), in_sync=False, last_success=B)
    assert (p["action"], p["new_color"]) == ("cutover", "blue")
    assert p["release"] == f"{NOW}-{B}"
    assert "settings changed" in p["reason"]


def test_same_tag_but_proxy_stopped_cuts_over_to_a_freshly_gated_colour():
    p = plan(
        observed("green", {"green": container(B)}, proxy_running=False, ready_status=-1), in_sync=True, last_success=B
    )
    assert (p["action"], p["new_color"]) == ("cutover", "blue")
    assert p["reason"] == "the proxy is not running"


def test_live_colour_not_answering_reloads_first_then_cuts_over():
    obs = observed("green", {"green": container(B)}, ready_status=503)
    first = plan(obs, in_sync=True, last_success=B)
    assert first["action"] == "reload"
    second = plan(obs, in_sync=True, last_success=B, answered_after_reload=False)
    assert (second["action"], second["new_color"]) == ("cutover", "blue")
    assert "api-green does not answer /ready through the proxy" in second["reason"]


def test_new_proxy_settings_are_reloaded_and_then_nothing_is_left_to_do():
    obs = observed("green", {"green": container(B)})
    first = plan(obs, in_sync=True, proxy_conf_changed=True, last_success=B)
    assert (first["action"], first["reason"]) == ("reload", "the proxy's settings changed")
    second = plan(obs, in_sync=True, proxy_conf_changed=True, last_success=B, answered_after_reload=True)
    assert second["action"] == "nothing"


def test_killed_before_the_switch_gates_the_new_colour_again_and_switches():
    # The proxy still names blue (tag A); green (tag B) was started by the killed run and never took traffic.
    obs = observed("blue", {"blue": container(A), "green": container(B)})
    p = plan(obs, last_success=A)
    assert (p["action"], p["new_color"], p["live_color"]) == ("cutover", "green", "blue")
    assert p["release"] == f"{NOW}-{B}", "the idle colour is gated again as a new release"
    assert p["retire"] == ["blue"]


def test_killed_after_the_switch_retires_the_old_colour_and_records_the_release():
    # The proxy names green (tag B) and answers from it; blue still runs idle; the history never got B.
    obs = observed("green", {"blue": container(A), "green": container(B)})
    p = plan(obs, in_sync=True, last_success=A)
    assert (p["action"], p["retire"], p["record"], p["idle"]) == ("finish", ["blue"], True, ["blue"])


def test_killed_between_writing_the_proxy_file_and_the_reload():
    # The file names green, nginx still serves blue: reload, then finish like a run killed after the switch.
    obs = observed("green", {"blue": container(A), "green": container(B)}, served_color="blue")
    assert plan(obs, in_sync=True, last_success=A)["action"] == "reload"
    p = plan(obs, in_sync=True, last_success=A, answered_after_reload=True)
    assert (p["action"], p["retire"], p["record"]) == ("finish", ["blue"], True)


def test_finished_run_only_missing_its_history_line():
    p = plan(observed("green", {"green": container(B)}), in_sync=True, last_success=A)
    assert (p["action"], p["retire"], p["record"]) == ("finish", [], True)


def test_proxy_file_naming_a_colour_without_container_cuts_over_to_that_colour():
    # Someone removed the live container: blue's file remains, green is stale and not named by the proxy.
    obs = observed("blue", {"green": container(A)}, ready_status=502)
    p = plan(obs)
    assert (p["action"], p["new_color"], p["live_color"]) == ("cutover", "blue", "")
    assert p["remove_orphans_on_switch"] is True
    assert p["retire"] == ["green"], "the stale colour the proxy does not name goes after the switch"
    assert "has no container" in p["reason"]


def test_force_cuts_over_even_when_nothing_changed():
    p = plan(observed("blue", {"blue": container(B)}), force=True, last_success=B)
    assert (p["action"], p["new_color"]) == ("cutover", "green")


@pytest.mark.parametrize(
    ("obs", "tag", "colors", "kwargs", "message"),
    [
        (observed(), "", COLORS, {}, "no tag"),
        (observed(), B, ["blue"], {}, "two distinct colours"),
        (observed(), B, ["blue", "blue"], {}, "two distinct colours"),
        (observed("blue", {"blue": container(B)}), B, COLORS, {}, "ask compose"),
    ],
)
def test_plan_refuses_incomplete_facts(obs, tag, colors, kwargs, message):
    with pytest.raises(AnsibleFilterError, match=message):
        release.release_plan(obs, tag, colors, NOW, **kwargs)


def test_a_failed_switch_removes_the_new_colour_only_when_the_old_one_answers_again():
    cut = plan(observed("blue", {"blue": container(A)}))
    back = release.release_switch_failed(cut, back_on_old=True)
    assert back == {"remove_new": True, "outcome": f"Restored {A}."}
    stuck = release.release_switch_failed(cut, back_on_old=False)
    assert stuck["remove_new"] is False and "both colours were kept" in stuck["outcome"]
    first = release.release_switch_failed(plan(observed(), in_sync=None), back_on_old=False)
    assert first == {"remove_new": True, "outcome": "There was no previous release to restore."}


ENTRIES = [
    {"env": "staging", "tag": A, "result": "success"},
    {"env": "production", "tag": A, "result": "success"},
    {"env": "staging", "tag": B, "result": "success"},
    {"env": "staging", "tag": "sha-ccccccc", "result": "failed"},
]


def test_last_success_per_environment():
    newest = release.release_last_success(ENTRIES)
    assert {env: record["tag"] for env, record in newest.items()} == {"staging": B, "production": A}
    assert release.release_last_success([]) == {}


def test_the_history_is_parsed_from_slurp_and_a_missing_file_is_empty():
    import base64
    import json

    lines = "".join(json.dumps(entry) + "\n" for entry in ENTRIES) + "\n"
    assert release.release_history_parse({"content": base64.b64encode(lines.encode()).decode()}) == ENTRIES
    assert release.release_history_parse({"failed": True, "msg": "file not found"}) == []
    assert release.release_history_parse(None) == []


def test_rollback_without_a_tag_returns_to_the_previous_successful_release_and_toggles():
    assert release.release_rollback_target(ENTRIES, "staging", running=B) == A
    # After that rollback (recorded as a success of A), the next rollback goes back to B.
    after = [*ENTRIES, {"env": "staging", "tag": A, "result": "success"}]
    assert release.release_rollback_target(after, "staging", running=A) == B


def test_rollback_with_a_tag_goes_to_that_tag():
    assert release.release_rollback_target(ENTRIES, "staging", running=B, requested="sha-ddddddd") == "sha-ddddddd"


def test_rollback_with_nothing_to_return_to_is_refused_with_the_reason():
    with pytest.raises(
        AnsibleFilterError, match=r"No earlier successful release of production in /h/r.jsonl \(running: sha-a"
    ):
        release.release_rollback_target(ENTRIES, "production", running=A, history_file="/h/r.jsonl")
    with pytest.raises(AnsibleFilterError, match=r"running: nothing"):
        release.release_rollback_target([], "staging", running="")


def test_successful_tags_of_an_environment_once_each_oldest_first():
    again = [*ENTRIES, {"env": "staging", "tag": A, "result": "success"}]
    assert release.release_successes(again, "staging") == [A, B]
    assert release.release_successes(ENTRIES, "production") == [A]


def test_images_kept_are_the_newest_distinct_successful_tags_of_any_environment():
    assert release.release_keep(ENTRIES, 5) == [B, A]
    assert release.release_keep(ENTRIES, 1) == [B]
    assert release.release_keep([], 3) == []


def _listed(service: str, state: str = "running", status: str = "Up 3 minutes (healthy)", tag: str = "") -> dict:
    """A container as docker_host_info lists it (containers_all, verbose_output)."""
    labels = {"com.docker.compose.service": service}
    if tag:
        labels.update({"io.local-llm-server.tag": tag, "io.local-llm-server.release": f"r-{tag}"})
    return {"Labels": labels, "State": state, "Status": status}


def test_live_state_from_what_the_host_shows():
    listed = [
        _listed("api-blue", state="exited", status="Exited (0) 2 minutes ago", tag=A),
        _listed("api-green", tag=B),
        _listed("proxy", status="Up 5 minutes"),
    ]
    conf = "server {\n        set $api_color green;\n}"
    reply = {"status": 200, "x_api_color": "green", "content": '{"status":"ready"}'}
    state = release.release_live_state(listed, conf, reply, COLORS)
    assert state["color"] == "green" and state["tag"] == B and state["release"] == f"r-{B}"
    assert state["containers"] == {
        "blue": {"tag": A, "release": f"r-{A}", "running": False, "health": "none"},
        "green": {"tag": B, "release": f"r-{B}", "running": True, "health": "healthy"},
    }
    observed = (state["proxy_running"], state["answered"], state["ready_status"], state["idle"])
    assert observed == (True, True, 200, ["blue"])
    # And the plan reads it as a killed-after-the-switch state.
    assert plan(state, in_sync=True, last_success=A)["action"] == "finish"


def test_live_state_reads_each_health_docker_reports():
    for status, health in [
        ("Up 2 seconds (health: starting)", "starting"),
        ("Up 1 minute (unhealthy)", "unhealthy"),
        ("Up 1 minute", "none"),
    ]:
        state = release.release_live_state(
            [_listed("api-blue", status=status, tag=A)], "set $api_color blue;", {}, COLORS
        )
        assert state["containers"]["blue"]["health"] == health, status


def test_live_state_of_an_environment_never_deployed():
    refused = {"status": -1, "msg": "Status code was -1: Request failed: refused"}
    state = release.release_live_state([], "", refused, COLORS)
    assert state == {
        "color": "", "containers": {}, "proxy_running": False, "answered": False, "ready_status": -1,
        "served_color": "", "ready_detail": "HTTP -1 from no colour " + refused["msg"], "tag": "", "release": "",
        "idle": [],
    }  # fmt: skip


def test_proxy_color_is_read_from_the_line_the_template_writes():
    template = (ROLES / "release" / "templates" / "nginx.conf.j2").read_text()
    assert "set $api_color {{ live_color }};" in template  # the line release_proxy_color reads back
    assert release.release_proxy_color("        set $api_color blue;\n") == "blue"
    assert release.release_proxy_color("# set $api_color blue; in a comment\n") == ""
    assert release.release_proxy_color(None) == ""


def test_ready_is_answered_only_by_a_200_from_the_colour_asked():
    # What ansible.builtin.uri returns on the host: headers as lower-case keys, status -1 when nothing answered.
    ok = {"status": 200, "x_api_color": "blue", "content": '{"status":"ready"}'}
    assert release.release_ready_answer(ok, "blue") == {
        "answered": True, "status": 200, "served_color": "blue", "detail": 'HTTP 200 from blue {"status":"ready"}',
    }  # fmt: skip
    other = release.release_ready_answer(ok, "green")
    assert not other["answered"] and other["served_color"] == "blue", "nginx still sends to the old colour"
    starting = release.release_ready_answer({"status": 503, "x_api_color": "green", "content": "x" * 500}, "green")
    assert not starting["answered"] and starting["status"] == 503 and len(starting["detail"]) < 240
    refused = {"status": -1, "failed": True, "msg": "Status code was -1 and not [200]: Request failed: refused"}
    nothing = release.release_ready_answer(refused, "")
    assert (nothing["answered"], nothing["status"], nothing["served_color"]) == (False, -1, "")
    assert nothing["detail"] == "HTTP -1 from no colour " + refused["msg"], "the message says why"


ENVS = {"staging": {}, "production": {}}
TAGS = "^sha-[0-9a-f]{7,40}$"


def problems(app_env="staging", repo="ghcr.io/o/llm", tag="sha-1234567", mode="deploy", channels=()):
    return release.release_input_problems(app_env, ENVS, repo, tag, mode, TAGS, list(channels))


def test_preflight_accepts_good_inputs_and_names_each_bad_one():
    assert problems() == []
    assert problems(mode="rollback", tag="") == [], "a rollback may leave the tag to the history"
    assert problems(tag="latest", channels=["latest"]) == []
    (env,) = problems(app_env="qa")
    assert "app_env must be one of staging, production, got 'qa'" in env and "-e app_env=" in env
    assert problems(app_env="") and problems(app_env=None)
    assert problems(repo="ghcr.io/Owner/llm") == [
        "image_repository must be set in the inventory (e.g. ghcr.io/<owner>/local-llm-server)."
    ]
    (tag,) = problems(tag="sha-XYZ1234")
    assert f"image_tag must match {TAGS}; got 'sha-XYZ1234'" in tag
    assert "got '(not given)'" in problems(tag="")[0]
    assert "or be one of latest" in problems(tag="main", channels=["latest"])[0]
    assert "got 'nope'" in problems(mode="rollback", tag="nope")[0], "a tag given to a rollback is checked too"
    assert len(problems(app_env="qa", repo=None, tag="x")) == 3


def test_registry_bearer_challenge_and_token_url_as_ghcr_sends_them():
    # ghcr.io's answer to an anonymous or basic-auth HEAD on a private manifest.
    header = 'Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:o/llm:pull"'
    challenge = release.bearer_challenge(header)
    assert challenge == {"realm": "https://ghcr.io/token", "service": "ghcr.io", "scope": "repository:o/llm:pull"}
    assert (
        release.release_registry_token_url({"status": 401, "www_authenticate": header}, "o/llm")
        == "https://ghcr.io/token?service=ghcr.io&scope=repository%3Ao/llm%3Apull"
    )
    assert release.bearer_challenge('Basic realm="registry"') is None, "plain registries: basic auth was the answer"
    assert release.release_registry_token_url({"status": 404, "www_authenticate": header}, "o/llm") == ""
    assert release.release_registry_token_url({"status": 401, "www_authenticate": 'Basic realm="r"'}, "o/llm") == ""
    assert release.release_registry_token_url({"status": 200}, "o/llm") == ""
    assert release.bearer_challenge(None) is None and release.bearer_challenge("") is None


def test_registry_detail_names_the_answer_and_never_the_credentials():
    assert release.release_registry_detail(200, "", "http://127.0.0.1:5000") == "present"
    assert release.release_registry_detail(401, "", "https://ghcr.io") == "credentials rejected (HTTP 401)"
    assert release.release_registry_detail(404, "", "https://ghcr.io") == "no such tag (HTTP 404)"
    refused = (
        "Status code was -1 and not [200, 401, 404]: Request failed: <urlopen error https://bot:s3cret@ghcr.io/v2/>"
    )
    detail = release.release_registry_detail(-1, refused, "https://ghcr.io")
    assert detail.startswith("registry https://ghcr.io did not answer: Status code was -1")
    assert "s3cret" not in detail and "bot" not in detail and "://***@ghcr.io" in detail


def test_a_stack_is_healthy_only_when_its_live_colour_runs_the_last_release_and_answers():
    listed = [_listed("api-green", tag=B), _listed("proxy")]
    answered = {"status": 200, "x_api_color": "green"}
    live_state = release.release_live_state(listed, "set $api_color green;", answered, COLORS)
    row = release.release_status_row(live_state, B)
    assert row["healthy"] and (row["color"], row["tag"], row["health"], row["ready"]) == ("green", B, "healthy", True)
    assert not release.release_status_row(live_state, A)["healthy"], "another tag than the last release is drift"
    other_colour = release.release_live_state(
        listed, "set $api_color green;", {**answered, "x_api_color": "blue"}, COLORS
    )
    assert not release.release_status_row(other_colour, B)["healthy"], "nginx has not loaded its file"
    sick = [_listed("api-green", status="Up 1 minute (unhealthy)", tag=B), _listed("proxy")]
    assert not release.release_status_row(
        release.release_live_state(sick, "set $api_color green;", answered, COLORS), B
    )["healthy"]
    nothing = release.release_status_row(release.release_live_state([], "", {}, COLORS), "")
    assert (nothing["healthy"], nothing["color"], nothing["health"]) == (False, "-", "absent")


def test_stack_models_are_the_allowed_and_embedding_models_of_its_env_file():
    text = "# comment\nMODEL_NAME=llama3.2:1b\nALLOWED_MODELS=llama3.2:1b,qwen2.5\nEMBED_MODEL_NAME=all-minilm\n"
    assert release.release_stack_models(text) == ["llama3.2:1b", "qwen2.5:latest", "all-minilm:latest"]
    assert release.release_stack_models("") == []  # a stack never deployed


def test_models_over_limit_warns_naming_the_models_and_the_limit():
    same = {"production": ["llama3.2:1b", "all-minilm"], "staging": ["llama3.2:1b", "all-minilm:latest"]}
    assert release.release_models_over_limit(same, "") == ""  # two distinct models, Ollama's default keeps 3
    assert release.release_models_over_limit(same, "2") == ""
    warning = release.release_models_over_limit(same, 1)
    assert "2 models" in warning and "keeps 1 at once" in warning and "production: llama3.2:1b, all-minilm" in warning
    apart = {"production": ["llama3.2:1b", "all-minilm"], "staging": ["qwen2.5:0.5b", "nomic-embed-text"]}
    warning = release.release_models_over_limit(apart, "")
    assert "4 models" in warning and "keeps 3 at once (OLLAMA_MAX_LOADED_MODELS default)" in warning
    assert "staging: qwen2.5:0.5b, nomic-embed-text" in warning


def test_paths_of_a_stack_are_one_directory_per_environment():
    assert release.release_paths("/Users/deploy/local-llm-server", "staging") == {
        "dir": "/Users/deploy/local-llm-server/staging",
        "compose_file": "/Users/deploy/local-llm-server/staging/compose.yml",
        "env_file": "/Users/deploy/local-llm-server/staging/.env.staging",
        "proxy_dir": "/Users/deploy/local-llm-server/staging/proxy",
        "proxy_conf": "/Users/deploy/local-llm-server/staging/proxy/nginx.conf",
    }


def test_a_ci_run_holds_the_lock_by_its_run_id_else_by_controller_and_pid():
    assert release.release_lock_holder_id("8812345678", "runner-1", 4242) == "8812345678"
    assert release.release_lock_holder_id("", "laptop", " 4242\n") == "laptop:4242"


def test_only_a_gone_run_of_this_controller_is_a_dead_holder():
    holder = {"id": "laptop:4242", "controller": "laptop", "controller_pid": "4242"}
    gone, alive = (lambda pid: False), (lambda pid: True)
    assert release.release_lock_dead_holders(holder, "laptop", "laptop:5000", gone) == ["laptop:4242"]
    assert release.release_lock_dead_holders(holder, "laptop", "laptop:5000", alive) == []
    # Another controller's pid says nothing here; our own id is re-taken by the module, never broken.
    assert release.release_lock_dead_holders(holder, "ci-runner", "ci-runner:1", gone) == []
    assert release.release_lock_dead_holders(holder, "laptop", "laptop:4242", gone) == []
    assert release.release_lock_dead_holders({}, "laptop", "laptop:5000", gone) == []
    assert release.release_lock_dead_holders({**holder, "controller_pid": ""}, "laptop", "laptop:5000", gone) == []
    # As the task passes it: slurp's result for holder.json, or a failed slurp (no lock).
    slurped = {"content": base64.b64encode(json.dumps(holder).encode()).decode()}
    assert release.release_lock_dead_holders(slurped, "laptop", "laptop:5000", gone) == ["laptop:4242"]
    assert release.release_lock_dead_holders({"failed": True, "msg": "not found"}, "laptop", "l:1", gone) == []


def test_a_pid_is_alive_while_its_process_exists():
    assert release.pid_alive(os.getpid())
    child = subprocess.Popen(["true"])
    child.wait()
    assert not release.pid_alive(child.pid)


TAGS_REPLY = {
    "status": 200,
    "json": {
        "models": [
            {"name": "llama3.2:1b", "model": "llama3.2:1b", "digest": "a" * 64, "size": 1},
            {"name": "all-minilm:latest", "model": "all-minilm:latest", "digest": "b" * 64, "size": 2},
        ]
    },
}


def test_served_models_are_the_names_and_digests_the_release_lists():
    assert release.release_served_models(TAGS_REPLY) == [
        {"name": "llama3.2:1b", "digest": "a" * 64},
        {"name": "all-minilm:latest", "digest": "b" * 64},
    ]
    assert release.release_served_models({"status": -1, "msg": "refused"}) == []
    assert release.release_served_models(None) == []


def test_a_model_pulled_again_or_removed_under_a_release_is_named():
    recorded = release.release_served_models(TAGS_REPLY)
    assert release.release_models_changed(recorded, recorded) == []
    pulled = [{"name": "llama3.2:1b", "digest": "c" * 64}, {"name": "all-minilm", "digest": "b" * 64}]
    (change,) = release.release_models_changed(recorded, pulled)
    assert change == f"llama3.2:1b changed under the release: digest {'a' * 12} then, {'c' * 12} now"
    (gone,) = release.release_models_changed(recorded, recorded[:1])
    assert gone.startswith("all-minilm:latest is gone from Ollama")
    assert release.release_models_changed([], pulled) == [], "a record without models says nothing"


def test_model_changes_per_environment_skip_a_stack_that_does_not_answer():
    last = {"staging": {"tag": A, "models": [{"name": "llama3.2:1b", "digest": "0" * 64}]}, "production": {"tag": B}}
    replies = [TAGS_REPLY, TAGS_REPLY]
    changes = release.release_models_changes(["staging", "production"], last, replies)
    assert list(changes) == ["staging"] and "llama3.2:1b changed" in changes["staging"][0]
    down = release.release_models_changes(["staging"], last, [{"status": -1}])
    assert down == {}, "a stack that does not answer is the health report's to name"
