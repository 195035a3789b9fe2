"""preflight only reads. Verify that its registry check was meaningful: the registry demands credentials."""


def test_registry_refuses_anonymous_requests(host):
    probe = (
        "import urllib.request, urllib.error\n"
        "try:\n    urllib.request.urlopen('http://127.0.0.1:5000/v2/', timeout=5); print(200)\n"
        "except urllib.error.HTTPError as e:\n    print(e.code)\n"
    )
    assert host.check_output(f'python3 -c "{probe}"') == "401"
