"""The mock CA is trusted by every TLS client of the replayed process; verification stays on."""

import json
import os
import subprocess
import sys

import pytest
from conftest import HOST, TESTS_DIR, child_env, has_module, run_json

CLIENTS = [
    "urllib",
    "http_client_default_context",
    "sslcontext_bare",
    "load_default_certs",
    "set_default_verify_paths",
    "certifi_cafile",
    "certifi_original_cafile",
    "requests",
    "requests_verify_certifi_path",
    "httpx_sync",
    "httpx_async",
    "asyncio_open_connection",
]
if has_module("uvloop"):
    CLIENTS += ["uvloop_httpx_async", "uvloop_open_connection"]


def fetch(port, env, clients=CLIENTS, host=HOST):
    p = subprocess.run(
        [sys.executable, os.path.join(TESTS_DIR, "tls_clients.py"), host, str(port), *clients],
        env=child_env(env),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=TESTS_DIR,
    )
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1]), p.stderr


def replay_env(certs, hosts_file, ca=True, host=HOST, **extra):
    env = {
        "TIMETRACER_REPLAY": "1",
        "TIMETRACER_REPLAY_HOSTS": hosts_file({host: ["127.0.0.1"]}),
    }
    if ca:
        env["TIMETRACER_REPLAY_CA"] = certs["ca"]
    env.update(extra)
    return env


def test_every_client_trusts_the_mock_ca(certs, tls_server, hosts_file):
    results, stderr = fetch(tls_server, replay_env(certs, hosts_file))
    failed = {k: v["error"] for k, v in results.items() if not v["ok"]}
    assert not failed, failed
    assert "timetracer-hook" not in stderr


def test_machine_bundles_do_not_matter(certs, tls_server, hosts_file):
    """SSL_CERT_FILE / REQUESTS_CA_BUNDLE naming a bundle without the mock CA: still trusted."""
    results, _ = fetch(
        tls_server,
        replay_env(
            certs,
            hosts_file,
            SSL_CERT_FILE=certs["other_ca"],
            REQUESTS_CA_BUNDLE=certs["other_ca"],
        ),
        ["urllib", "requests", "set_default_verify_paths", "httpx_sync"],
    )
    failed = {k: v["error"] for k, v in results.items() if not v["ok"]}
    assert not failed, failed


def test_without_the_ca_verification_fails(certs, tls_server, hosts_file):
    """Control: hostnames mapped but no mock CA: every client rejects the mock's certificate."""
    results, _ = fetch(tls_server, replay_env(certs, hosts_file, ca=False))
    for name, r in results.items():
        assert not r["ok"], name
        assert "CERTIFICATE_VERIFY_FAILED" in r["error"] or "certificate verify failed" in (
            r["error"].lower()
        ), (name, r["error"])


def test_without_the_hook_nothing_connects(certs, tls_server):
    results, _ = fetch(tls_server, {}, ["urllib", "requests", "httpx_sync"])
    assert not any(r["ok"] for r in results.values()), results


def test_a_certificate_from_another_ca_is_still_rejected(certs, other_tls_server, hosts_file):
    results, _ = fetch(other_tls_server, replay_env(certs, hosts_file))
    for name, r in results.items():
        assert not r["ok"], name
        assert "CERTIFICATE_VERIFY_FAILED" in r["error"] or "certificate verify failed" in (
            r["error"].lower()
        ), (name, r["error"])


def test_hostname_checking_stays_on(certs, tls_server, hosts_file):
    """A mock-CA certificate for another name is rejected."""
    wrong = "wrong.recorded.test"
    results, _ = fetch(
        tls_server,
        replay_env(certs, hosts_file, host=wrong),
        ["urllib", "sslcontext_bare", "requests", "httpx_sync", "asyncio_open_connection"],
        host=wrong,
    )
    for name, r in results.items():
        assert not r["ok"], name
        assert "hostname" in r["error"].lower() or "match" in r["error"].lower(), (name, r["error"])


def test_certifi_where_is_a_combined_bundle(certs, hosts_file):
    if not has_module("certifi"):
        pytest.skip("certifi is not installed")
    code = """
        import json, certifi, timetracer_hook
        import requests.utils
        orig = certifi.where.__wrapped__()
        print(json.dumps({
            "where": certifi.where(),
            "orig": orig,
            "core_where": __import__("certifi.core").core.where(),
            "contents_is_file": certifi.contents() == open(certifi.where()).read(),
            "orig_text": open(orig).read(),
            "text": open(certifi.where()).read(),
            "requests_default": requests.utils.DEFAULT_CA_BUNDLE_PATH,
            "state": timetracer_hook.active()["certifi_bundle"],
        }))
    """
    env = replay_env(certs, hosts_file)
    out, _ = run_json(code, env)
    ca = open(certs["ca"]).read().strip()
    assert out["where"] != out["orig"]
    assert out["core_where"] == out["where"] == out["state"] == out["requests_default"]
    assert out["contents_is_file"]
    assert out["text"].startswith(out["orig_text"].rstrip("\n"))
    assert ca in out["text"]
    st = os.stat(out["where"])
    assert st.st_mode & 0o022 == 0
    assert os.stat(os.path.dirname(out["where"])).st_mode & 0o077 == 0
    # Every process of the replay shares the same file.
    again, _ = run_json(code, env)
    assert again["where"] == out["where"]


def test_ca_file_is_parsed_and_mock_ca_added_once(certs, tls_server, hosts_file):
    code = """
        import json, ssl, http.client
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        before = ctx.cert_store_stats()["x509_ca"]
        for _ in range(3):
            c = http.client.HTTPSConnection("%s", %d, timeout=10, context=ctx)
            c.request("GET", "/"); c.getresponse().read(); c.close()
        print(json.dumps({"before": before, "after": ctx.cert_store_stats()["x509_ca"],
                          "verify": ctx.verify_mode == ssl.CERT_REQUIRED}))
    """ % (HOST, tls_server)
    out, _ = run_json(code, replay_env(certs, hosts_file))
    # Nothing is added at creation (code that checks for an empty store still sees one); the
    # mock CA is added once, at the first handshake.
    assert out == {"before": 0, "after": 1, "verify": True}
