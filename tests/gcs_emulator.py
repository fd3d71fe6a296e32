"""A local GCS emulator for tests: ``gcp-storage-emulator`` on 127.0.0.1, never real GCP.

``gcs_emulator`` (a session fixture) starts this file as a subprocess, which serves an in-memory
emulator on a free loopback port with bucket ``test-bucket``, and returns the environment every
layer needs (see ``emulator_env``); it also sets that environment in this process for the
session. Subprocesses (a multi-process training run) get it by ``env={**os.environ, **env}``.

The emulator (gcp-storage-emulator 2026.7) lacks three GCS JSON API features that TensorStore's
``gcs`` kvstore (Orbax's array writer) relies on; ``_patch_emulator`` adds them:

* media downloads carry no ``x-goog-generation`` header, so TensorStore reads generation 0 and
  its next conditional write of an OCDBT manifest fails with ``Malformed StorageGeneration``;
* ``ifGenerationMatch`` / ``ifGenerationNotMatch`` preconditions are ignored (no 412 / 304);
* ``objects.list`` ignores ``startOffset`` / ``endOffset``, which TensorStore uses instead of
  ``prefix`` (a ``List`` or ``DeleteRange`` would then see every object in the bucket).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from http import HTTPStatus

import pytest

BUCKET = "test-bucket"


def emulator_env(url: str, gcloud_config: str | os.PathLike) -> dict[str, str]:
    """What gcsfs (epath's ``gs://`` backend), google-cloud-storage (Orbax's HNS check) and
    TensorStore need to use the emulator at ``url`` with no credentials and no metadata server.
    ``gcloud_config`` is an empty folder, so no developer's gcloud login is ever picked up."""
    unreachable = "127.0.0.1:1"  # refused at once: any metadata-server probe fails fast
    return {
        "STORAGE_EMULATOR_HOST": url,  # gcsfs, google-cloud-storage
        "TENSORSTORE_GCS_HTTP_URL": url,  # TensorStore's gcs kvstore
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",  # TensorStore: skip credential discovery
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",  # no Storage Control gRPC bucket probes
        "FSSPEC_GCS_TOKEN": "anon",  # gcsfs: anonymous, no credential discovery at all
        "EPATH_USE_TF": "false",  # epath: gcsfs even where TensorFlow is installed
        "NO_GCE_CHECK": "true",  # google-auth, gcsfs: do not probe the metadata server
        "GCE_METADATA_HOST": unreachable,
        "GCE_METADATA_ROOT": unreachable,  # the older name; TensorStore reads this one
        "GCE_METADATA_IP": unreachable,
        "CLOUDSDK_CONFIG": os.fspath(gcloud_config),
        "GOOGLE_APPLICATION_CREDENTIALS": "",
        "GOOGLE_CLOUD_PROJECT": "test-project",
    }


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory) -> Iterator[dict[str, str]]:
    """Starts the emulator, sets its environment here and yields it; stops it at the end."""
    pytest.importorskip("gcp_storage_emulator")
    if importlib.util.find_spec("gcsfs") is None:  # not imported: its import reads the env
        pytest.skip("gcsfs (epath's gs:// backend) is not installed")
    import fsspec.config

    log = tmp_path_factory.mktemp("gcs_emulator") / "stderr.log"
    with open(log, "w") as stderr:  # the server's tracebacks (clients hanging up) go here
        proc = subprocess.Popen(
            [sys.executable, __file__, "--bucket", BUCKET],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    try:
        url = proc.stdout.readline().strip()  # the server prints its URL once it listens
        if not url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"GCS emulator did not start: {log.read_text()[-2000:]}")
        env = emulator_env(url, tmp_path_factory.mktemp("gcloud"))
        with pytest.MonkeyPatch.context() as mp:
            for key, value in env.items():
                mp.setenv(key, value)
            # fsspec read FSSPEC_* when it was imported; set its config for this process too
            gcs_conf = {**fsspec.config.conf.get("gcs", {}), "token": "anon"}
            mp.setitem(fsspec.config.conf, "gcs", gcs_conf)
            yield env
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()


def _patch_emulator() -> None:
    """Adds generation headers, generation preconditions and list offsets (module docstring)."""
    from gcp_storage_emulator import server
    from gcp_storage_emulator.exceptions import NotFound
    from gcp_storage_emulator.handlers import objects

    def generation(request, storage) -> int:
        """The object's current generation; 0 when it does not exist (as GCS counts it)."""
        name = request.params.get("object_id") or request.query.get("name", [""])[0]
        try:
            return int(storage.get_file_obj(request.params["bucket_name"], name)["generation"])
        except NotFound:
            return 0

    def with_preconditions(handler):
        def wrapped(request, response, storage, *args, **kwargs):
            current = generation(request, storage)
            match = request.query.get("ifGenerationMatch")
            not_match = request.query.get("ifGenerationNotMatch")
            if match and int(match[0]) != current:
                response.status = HTTPStatus.PRECONDITION_FAILED
            elif not_match and int(not_match[0]) == current:
                response.status = HTTPStatus.NOT_MODIFIED
            else:
                handler(request, response, storage, *args, **kwargs)

        return wrapped

    def with_generation_headers(download):
        def wrapped(request, response, storage, *args, **kwargs):
            download(request, response, storage, *args, **kwargs)
            if response.status in (HTTPStatus.OK, HTTPStatus.PARTIAL_CONTENT):
                response["x-goog-generation"] = str(generation(request, storage))
                response["x-goog-metageneration"] = "1"

        return wrapped

    def with_offsets(ls):
        def wrapped(request, response, storage, *args, **kwargs):
            ls(request, response, storage, *args, **kwargs)
            start = request.query.get("startOffset", [""])[0]
            end = request.query.get("endOffset", [""])[0]
            if response.status == HTTPStatus.OK and (start or end):
                listing = json.loads(response._content)
                listing["items"] = [
                    item
                    for item in listing.get("items") or []
                    if item["name"] >= start and (not end or item["name"] < end)
                ]
                response.json(listing)

        return wrapped

    download = objects.download
    objects.download = with_generation_headers(download)  # what objects.get (alt=media) calls
    wrappers = {
        objects.get: with_preconditions(objects.get),
        download: with_preconditions(objects.download),
        objects.insert: with_preconditions(objects.insert),
        objects.delete: with_preconditions(objects.delete),
        objects.ls: with_offsets(objects.ls),
    }
    for _, handlers in server.HANDLERS:
        for method, handler in handlers.items():
            handlers[method] = wrappers.get(handler, handler)


def _serve(bucket: str) -> None:
    """Serves an in-memory emulator with ``bucket`` on a free loopback port; prints its URL."""
    import logging
    import signal

    from gcp_storage_emulator.server import create_server

    logging.disable(logging.CRITICAL)
    _patch_emulator()
    emulator = create_server("127.0.0.1", 0, in_memory=True, default_bucket=bucket)
    emulator.start()
    print(f"http://127.0.0.1:{emulator._api._httpd.server_address[1]}", flush=True)
    while True:  # until SIGTERM (the in-memory data goes with the process)
        signal.pause()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=_serve.__doc__)
    parser.add_argument("--bucket", default=BUCKET)
    _serve(parser.parse_args().bucket)
