"""The object store of the ``dist2s3`` mode: moto's standalone S3 server in its own process
on 127.0.0.1 (a real S3 HTTP API, as in the tests), with one bucket for the run.

It is a stand-in for MinIO or S3 on the same machine: its CPU counts as the run's own (it is
a child of the bench), so the figure includes what receiving the objects costs here."""

from __future__ import annotations

import subprocess
import time

import httpx

from bench import procs

BUCKET = "pixelbatch-bench"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench-key-id",
    "AWS_SECRET_ACCESS_KEY": "bench-secret-key",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class MotoServer:
    def __init__(self) -> None:
        self.port = procs.free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [procs.python(), "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            cwd=procs.ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("moto server exited at start")
            try:
                httpx.get(self.endpoint + "/moto-api/", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            self.stop()
            raise RuntimeError("moto server did not start")
        import boto3

        self.client = boto3.session.Session(
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
        ).client("s3", endpoint_url=self.endpoint)
        self.client.create_bucket(Bucket=BUCKET)

    def objects(self, prefix: str) -> int:
        """How many objects the bucket holds under ``prefix`` (first 1000)."""
        answer = self.client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
        return int(answer.get("KeyCount", 0))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def env(self) -> dict[str, str]:
        """What a pixelbatch process needs to store in the bucket."""
        return {
            "PIXELBATCH_STORAGE_URL": f"s3://{BUCKET}/outputs",
            "PIXELBATCH_S3_ENDPOINT_URL": self.endpoint,
            "PIXELBATCH_S3_REGION": CREDENTIALS["AWS_DEFAULT_REGION"],
            **CREDENTIALS,
        }

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
