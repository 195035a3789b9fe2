"""Cloudflare Access JWT check, against a key set generated here and served over real HTTP on loopback."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from .conftest import MODEL, base_env

AUD = "a1b2c3d4e5f6-test-application-aud"
KID = "test-key-1"


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class CertsServer:
    """Serves {"keys": [...]} like https://<team>.cloudflareaccess.com/cdn-cgi/access/certs; counts fetches."""

    def __init__(self, keys: dict[str, rsa.RSAPrivateKey]) -> None:
        jwks = []
        for kid, key in keys.items():
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
            jwks.append({**jwk, "kid": kid, "alg": "RS256", "use": "sig"})
        body = json.dumps({"keys": jwks, "public_cert": {"kid": KID, "cert": "unused"}}).encode()
        self.hits = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                server.hits += 1
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/cdn-cgi/access/certs"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return new_key()


@pytest.fixture(scope="module")
def certs(signing_key):
    server = CertsServer({KID: signing_key})
    yield server
    server.close()


@pytest.fixture(scope="module")
def jwt_service(start_service, ollama_double, certs):
    return start_service(**base_env(ollama_double, CF_ACCESS_AUD=AUD, CF_ACCESS_CERTS_URL=certs.url))


def token(key, *, aud=AUD, exp_in=300, kid=KID, alg="RS256") -> str:
    now = int(time.time())
    claims = {"aud": [aud], "email": "ci@example.com", "iat": now, "nbf": now, "exp": now + exp_in}
    claims["iss"] = "https://team.cloudflareaccess.com"
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})


def get(service, path: str, tok: str | None = None) -> httpx.Response:
    headers = {"Cf-Access-Jwt-Assertion": tok} if tok is not None else {}
    return httpx.get(service.url + path, headers=headers)


def test_valid_token_passes_and_keys_are_cached(jwt_service, certs, signing_key, double):
    tok = token(signing_key)
    for path in ("/api/tags", "/api/version", "/v1/models", "/ready", "/metrics"):
        assert get(jwt_service, path, tok).status_code == 200, path
    resp = httpx.post(
        jwt_service.url + "/api/chat",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": False},
        headers={"Cf-Access-Jwt-Assertion": tok},
    )
    assert resp.status_code == 200
    assert certs.hits == 1  # fetched once, then cached
    assert "cf-access-jwt-assertion" not in double.requests[-1].headers  # never forwarded


def test_health_needs_no_token(jwt_service):
    assert get(jwt_service, "/health").status_code == 200


def test_missing_token_is_401(jwt_service, double):
    resp = get(jwt_service, "/api/tags")
    assert resp.status_code == 401
    assert "Cf-Access-Jwt-Assertion" in resp.json()["error"]
    resp = get(jwt_service, "/v1/models")
    assert resp.status_code == 401 and resp.json()["error"]["type"] == "authentication_error"
    assert get(jwt_service, "/metrics").status_code == 401
    assert double.requests == []


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda key: token(key, exp_in=-60), "expired"),
        (lambda key: token(key, aud="another-app"), "aud"),
        (lambda key: token(new_key()), "invalid"),  # right kid, wrong signature
        (lambda key: token(key, kid="unknown-kid"), "unknown key"),
        (
            lambda key: jwt.encode(
                {"aud": AUD, "exp": int(time.time()) + 60}, "a-shared-secret-of-at-least-32-bytes!", algorithm="HS256"
            ),
            "RS256",
        ),
        (lambda key: "not-a-jwt", "malformed"),
    ],
    ids=["expired", "wrong-aud", "bad-signature", "unknown-kid", "hs256", "garbage"],
)
def test_invalid_tokens_are_403(jwt_service, signing_key, double, make, reason):
    resp = get(jwt_service, "/api/tags", make(signing_key))
    assert resp.status_code == 403
    assert reason in resp.json()["error"]
    assert double.requests == []


def test_jwt_check_is_off_by_default(client, double):
    assert client.get("/api/tags").status_code == 200  # the shared service has no CF_ACCESS_* settings
