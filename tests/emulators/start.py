#!/usr/bin/env python3
"""Starts the object-storage emulators the tests use, on 127.0.0.1, and
prints the environment that points the tests at them.

    eval "$(python3 tests/emulators/start.py DIR)"

- Azure: Azurite (npm package azurite@3.35.0), blob service only. Its
  well-known development account is public; the container `diskvault-test`
  is created with a Shared Key signed request (object_store cannot create
  containers).
- S3: moto's server (PyPI package moto[server]); the bucket
  `diskvault-test` is created with a plain request (moto does not check
  signatures).

DIR holds the emulators' data, logs, and `pids` (their process ids, for
`kill $(cat DIR/pids)`). Each emulator that cannot be found
is skipped with a line on stderr; the tests then skip its backend.
"""

import base64
import datetime
import hashlib
import hmac
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

ACCOUNT = "devstoreaccount1"
# Azurite's published development key (not a secret).
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
CONTAINER = "diskvault-test"


def remember(data, proc):
    """Records the emulator's process id in DIR/pids, for whoever stops them."""
    with open(os.path.join(data, "pids"), "a") as f:
        f.write(f"{proc.pid}\n")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.2)
    return False


def create_container(endpoint):
    """PUT ?restype=container, signed with Shared Key."""
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT")
    version = "2021-10-04"
    string_to_sign = "\n".join(
        ["PUT", "", "", "", "", "", "", "", "", "", "", "",
         f"x-ms-date:{date}\nx-ms-version:{version}",
         f"/{ACCOUNT}/{ACCOUNT}/{CONTAINER}\nrestype:container"]
    )
    signature = base64.b64encode(
        hmac.new(base64.b64decode(KEY), string_to_sign.encode(), hashlib.sha256).digest()
    ).decode()
    req = urllib.request.Request(
        f"{endpoint}/{ACCOUNT}/{CONTAINER}?restype=container",
        method="PUT",
        headers={
            "x-ms-date": date,
            "x-ms-version": version,
            "Authorization": f"SharedKey {ACCOUNT}:{signature}",
            "Content-Length": "0",
        },
    )
    try:
        urllib.request.urlopen(req, timeout=10)
    except urllib.error.HTTPError as e:
        if e.code != 409:  # already exists
            raise


def start_azurite(data):
    exe = shutil.which("azurite-blob")
    local = os.path.join(os.path.dirname(__file__), "node_modules", ".bin", "azurite-blob")
    if not exe and os.path.exists(local):
        exe = local
    if not exe:
        print("emulators: azurite-blob not found (npm install azurite@3.35.0); Azure tests will skip", file=sys.stderr)
        return None
    port = free_port()
    os.makedirs(os.path.join(data, "azurite"), exist_ok=True)
    log = open(os.path.join(data, "azurite.log"), "w")
    proc = subprocess.Popen(
        [exe, "--blobHost", "127.0.0.1", "--blobPort", str(port),
         "--location", os.path.join(data, "azurite"), "--disableTelemetry", "--silent"],
        stdout=log, stderr=log, start_new_session=True,
    )
    remember(data, proc)
    if not wait_for(port):
        print("emulators: Azurite did not start; see azurite.log", file=sys.stderr)
        return None
    endpoint = f"http://127.0.0.1:{port}"
    create_container(endpoint)
    return endpoint


def start_moto(data):
    try:
        import moto.server  # noqa: F401
    except ImportError:
        print("emulators: moto not found (pip install 'moto[server]'); S3 tests will skip", file=sys.stderr)
        return None
    port = free_port()
    log = open(os.path.join(data, "moto.log"), "w")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=log, start_new_session=True)
    remember(data, proc)
    if not wait_for(port):
        print("emulators: moto did not start; see moto.log", file=sys.stderr)
        return None
    endpoint = f"http://127.0.0.1:{port}"
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{CONTAINER}", method="PUT"), timeout=10)
    return endpoint


def main():
    data = sys.argv[1] if len(sys.argv) > 1 else "target/emulators"
    os.makedirs(data, exist_ok=True)
    azure = start_azurite(data)
    s3 = start_moto(data)
    if azure:
        print(f"export DISKVAULT_TEST_AZURITE={azure}")
    if s3:
        print(f"export DISKVAULT_TEST_S3={s3}")


if __name__ == "__main__":
    main()
