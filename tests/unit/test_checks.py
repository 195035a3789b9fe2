"""The host checks' verdicts (the check modules of the docker_runtime, ollama and cloudflared roles), case by case.

These are the functions the modules call, imported from their role directories; the modules themselves run for real
on the testbed in molecule (each role's scenario) and in the e2e tier (tests/e2e/test_04_preconditions.py, test_07).
"""

from __future__ import annotations

from tests.role_plugins import role_plugin

host = role_plugin("docker_runtime/library/docker_runtime_check.py")
ollama = role_plugin("ollama/library/ollama_check.py")
cloudflared = role_plugin("cloudflared/library/cloudflared_check.py")

SETTINGS = {
    "docker_host": "unix:///var/run/docker.sock",
    "min_docker_version": "20.10",
    "min_compose_version": "2.18.0",
    "min_free_gib": 5,
    "disk_path": "/Users/deploy",
    "start_interval": "",
    "host": "mini",
}


def answered(docker="27.3.1", compose_rc=0, compose="v2.29.7\n", compose_stderr="", gib=120.5) -> dict:
    return {
        "docker_error": "",
        "docker_version": docker,
        "compose_rc": compose_rc,
        "compose_stdout": compose,
        "compose_stderr": compose_stderr,
        "free_gib": gib,
        "system": "Darwin",
        "distribution": "MacOSX",
        "distribution_version": "15.1",
    }


# What `docker version --format '{{json .}}'` prints (Docker 27), cut to the fields read.
ANSWERED = '{"Client":{"Version":"27.3.1","ApiVersion":"1.47"},"Server":{"Version":"27.3.1","ApiVersion":"1.47"}}'
NO_ENGINE = '{"Client":{"Version":"27.3.1","ApiVersion":"1.47"},"Server":null}'
NO_ENGINE_SAID = "Cannot connect to the Docker daemon at unix:///nonexistent/docker.sock. Is the docker daemon running?"


def test_a_ready_host_is_reported_with_what_was_found():
    ok, msg = host.host_verdict(answered(), SETTINGS)
    assert ok
    assert msg == (
        "mini: Darwin MacOSX 15.1, Docker 27.3.1 at unix:///var/run/docker.sock, Compose 2.29.7, "
        "120.5 GiB free under /Users/deploy."
    )


def test_an_engine_that_does_not_answer_names_the_socket_and_docker_desktop():
    ok, msg = host.host_verdict({**answered(), "docker_error": "Error connecting: No such file"}, SETTINGS)
    assert not ok
    assert msg.startswith("The Docker engine at unix:///var/run/docker.sock does not answer: Error connecting")
    assert "Docker Desktop" in msg
    _, msg = host.host_verdict({**answered(), "docker_error": NO_ENGINE_SAID}, SETTINGS)
    assert f"does not answer: {NO_ENGINE_SAID} On a Mac" in msg


def test_each_shortfall_is_refused_naming_found_and_needed():
    for facts, expected in [
        (answered(docker="19.03.15"), "Docker 19.03.15 (need >= 20.10)"),
        (answered(compose="2.17.3"), "Compose 2.17.3 (need >= 2.18.0)"),
        (answered(compose_rc=1, compose="", compose_stderr="'compose' is not a docker command."), "missing: 'compose'"),
        (answered(gib=2.5), "free 2.5 GiB under /Users/deploy (need >= 5)"),
    ]:
        ok, msg = host.host_verdict(facts, SETTINGS)
        assert not ok and msg.startswith("Host not ready: ") and expected in msg, msg


def test_versions_compare_as_versions_not_strings():
    assert host.host_verdict(answered(docker="20.10.24+dfsg1"), SETTINGS)[0]
    assert not host.host_verdict(answered(docker="20.9.1"), SETTINGS)[0]
    assert host.host_verdict(answered(compose="2.100.0"), SETTINGS)[0]


def test_start_interval_needs_engine_25():
    settings = {**SETTINGS, "start_interval": "250ms"}
    ok, msg = host.host_verdict(answered(docker="20.10.24+dfsg1"), settings)
    assert not ok and "app_healthcheck_start_interval needs Docker >= 25" in msg
    assert host.host_verdict(answered(docker="25.0.0"), settings)[0]


def test_free_space_is_reported_in_gib_to_one_decimal():
    assert host.free_gib(10 * 1024**3) == 10.0
    assert host.free_gib(int(2.56 * 1024**3)) == 2.6


def test_the_engines_version_is_the_servers_not_the_clis():
    assert host.engine_version(0, ANSWERED, "") == ("27.3.1", "")
    assert host.engine_version(1, NO_ENGINE, NO_ENGINE_SAID + "\n") == ("", NO_ENGINE_SAID)
    assert host.engine_version(127, "", "no docker command on the PATH") == ("", "no docker command on the PATH")
    assert host.engine_version(1, "", "") == ("", "docker version exited with 1")


def test_ollama_is_asked_where_the_containers_reach_it():
    # The bridge as `docker network inspect bridge` describes it.
    bridge = {"Name": "bridge", "IPAM": {"Config": [{"Subnet": "172.17.0.0/16", "Gateway": "172.17.0.1"}]}}
    assert ollama.ollama_address(bridge, "", 11434, "Linux") == "http://172.17.0.1:11434"
    # Debian's engine 20.10 leaves the gateway out: the subnet's first address.
    old_engine = {"Name": "bridge", "IPAM": {"Config": [{"Subnet": "172.30.0.0/16"}]}}
    assert ollama.ollama_address(old_engine, "", 11434, "Linux") == "http://172.30.0.1:11434"
    assert ollama.ollama_address(None, "", 11434, "Darwin") == "http://127.0.0.1:11434"
    assert ollama.ollama_address(bridge, "http://ollama.lan:11434", 11434, "Linux") == "http://ollama.lan:11434"


def test_models_ollama_lacks_an_untagged_name_meaning_latest():
    present = ["llama3.2:1b", "nomic-embed-text:latest"]
    assert ollama.ollama_missing(["llama3.2:1b", "nomic-embed-text"], present) == []
    assert ollama.ollama_missing(["llama3.2:3b", "all-minilm"], present) == ["llama3.2:3b", "all-minilm"]


def test_each_configured_model_gets_the_digest_ollama_lists_for_it():
    # /api/tags' models, cut to the fields read (https://github.com/ollama/ollama/blob/main/docs/api.md).
    listed = [
        {
            "name": "llama3.2:1b",
            "model": "llama3.2:1b",
            "digest": "baf6a787fdffd633537aa2eb51cfd54cb93ff08e28040095462bb63daf552878",
        },
        {
            "name": "all-minilm:latest",
            "model": "all-minilm:latest",
            "digest": "1b226e2802dbb772b5fc32a58f103ca1804ef7501331012de126ab22f67475ef",
        },
    ]
    assert ollama.model_digests(["all-minilm", "llama3.2:1b"], listed) == [
        {"name": "all-minilm", "digest": listed[1]["digest"]},
        {"name": "llama3.2:1b", "digest": listed[0]["digest"]},
    ]
    assert ollama.model_digests(["llama3.2:3b"], listed) == [{"name": "llama3.2:3b", "digest": None}]
    assert ollama.model_digests(["llama3.2:1b"], []) == [{"name": "llama3.2:1b", "digest": None}]


def test_missing_models_are_named_with_what_ollama_has():
    url = "http://172.17.0.1:11434"
    ok, msg = ollama.models_verdict(url, "0.12.6", ["llama3.2:1b", "nomic-embed-text"], ["some-other-model:7b"])
    assert not ok
    assert msg.startswith(
        "Ollama 0.12.6 at http://172.17.0.1:11434 does not have model llama3.2:1b, model nomic-embed-text "
        "(it has: some-other-model:7b)."
    )
    ok, msg = ollama.models_verdict(url, "0.12.6", ["llama3.2:1b"], [])
    assert not ok and "(it has: none)" in msg
    ok, msg = ollama.models_verdict(url, "0.12.6", ["llama3.2:1b"], ["llama3.2:1b"])
    assert ok and msg == "Ollama 0.12.6 answers at http://172.17.0.1:11434 and has llama3.2:1b."


def test_an_ollama_that_does_not_answer_is_named_with_the_address_the_containers_use():
    msg = ollama.not_answering("http://172.17.0.1:11434", "Status code was 503")
    assert msg.startswith("Ollama does not answer at http://172.17.0.1:11434 (the address the containers use)")


METRICS = "http://127.0.0.1:20241"


def test_cloudflared_ready_needs_200_and_enough_connections():
    assert cloudflared.ready_verdict(METRICS, {"status": 200, "json": {"readyConnections": 4}}, 1) == (
        True,
        "cloudflared ready with 4 edge connection(s).",
    )
    ok, msg = cloudflared.ready_verdict(METRICS, {"status": 503, "json": {"readyConnections": 0}}, 1)
    assert not ok and "cloudflared is not ready" in msg and "(HTTP 503, readyConnections=0)" in msg
    ok, msg = cloudflared.ready_verdict(METRICS, {"status": -1, "msg": "Connection refused"}, 1)
    assert not ok and "(HTTP no answer, readyConnections=?)" in msg
    assert not cloudflared.ready_verdict(METRICS, {"status": 200, "json": {"readyConnections": 1}}, 2)[0]


ROUTES = {"staging": ("staging.llm.example.com", 8001), "production": ("llm.example.com", 8000)}
GOOD = {
    "ingress": [
        {"hostname": "staging.llm.example.com", "service": "http://localhost:8001"},
        {"hostname": "llm.example.com", "service": "http://127.0.0.1:8000/"},
        {"service": "http_status:404"},
    ]
}


def test_each_environment_must_be_routed_to_its_port():
    verdicts = cloudflared.ingress_verdicts("/etc/cloudflared/config.yml", GOOD, ROUTES)
    assert verdicts == [
        (True, "staging: staging.llm.example.com -> http://localhost:8001"),
        (True, "production: llm.example.com -> http://127.0.0.1:8000/"),
    ]
    swapped = {"ingress": [{"hostname": "llm.example.com", "service": "http://localhost:8001"}, GOOD["ingress"][-1]]}
    ok, msg = cloudflared.ingress_verdicts("/etc/cloudflared/config.yml", swapped, ROUTES)[1]
    assert not ok
    assert msg.startswith("/etc/cloudflared/config.yml: ingress must route 'llm.example.com' (production) to one of")
    assert "(first matching rule: http://localhost:8001)" in msg


def test_the_first_matching_rule_wins_and_path_rules_are_not_it():
    first_wrong = {"ingress": [{"hostname": "llm.example.com", "service": "http://localhost:9999"}, *GOOD["ingress"]]}
    assert not cloudflared.ingress_verdicts("c.yml", first_wrong, ROUTES)[1][0]
    with_path = {"ingress": [{"hostname": "llm.example.com", "path": "/x", "service": "http://x:1"}, *GOOD["ingress"]]}
    assert cloudflared.ingress_verdicts("c.yml", with_path, ROUTES)[1][0]


def test_the_last_rule_must_be_a_catch_all():
    no_catch_all = {"ingress": GOOD["ingress"][:2]}
    assert not any(ok for ok, _ in cloudflared.ingress_verdicts("c.yml", no_catch_all, ROUTES))
    assert not any(ok for ok, _ in cloudflared.ingress_verdicts("c.yml", {}, ROUTES))


SERVICE = {
    "launchd_label": "com.cloudflare.cloudflared",
    "systemd_unit": "cloudflared.service",
    "process_pattern": "[c]loudflared",
}


def test_the_service_is_loaded_by_launchd_systemd_or_as_a_process():
    assert cloudflared.service_verdict("Darwin", {"launchd": 0}, SERVICE) == (True, "cloudflared loaded (launchd).")
    assert cloudflared.service_verdict("Darwin", {"launchd": 113, "launchd_agent": 0}, SERVICE)[0]
    assert cloudflared.service_verdict("Linux", {"systemd": 0}, SERVICE) == (True, "cloudflared loaded (systemd).")
    assert (
        cloudflared.service_verdict("Linux", {"systemd": 1, "process": 0}, SERVICE)[1]
        == "cloudflared loaded (process)."
    )
    ok, msg = cloudflared.service_verdict("Darwin", {"launchd": 113, "launchd_agent": 1}, SERVICE)
    assert not ok and "launchd label com.cloudflare.cloudflared not found" in msg
    ok, msg = cloudflared.service_verdict("Linux", {"systemd": 1, "process": 1}, SERVICE)
    assert not ok and msg == (
        "cloudflared is not loaded as a service: neither cloudflared.service is active nor a process matches "
        "[c]loudflared."
    )
