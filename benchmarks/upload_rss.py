"""Peak memory of the API process while it takes a large upload (streamed: target < 200 MB for 1 GiB).

Runs the real stack on free loopback ports (anvil, the local IPFS node, SQLite, the API as its own
uvicorn process), registers `--runs` uploads of `--size-mib` MiB each, and reads the API process's peak
RSS (VmHWM, reset before every upload through /proc/PID/clear_refs). Printed side by side: the same
process's idle RSS, its peak during the upload, and the file size. Medians over the runs.

    .venv/bin/python -m benchmarks.upload_rss --size-mib 1024 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from eth_account import Account
from sqlalchemy.orm import Session

from edgeledger.auth import service as auth_service
from edgeledger.auth.models import Role
from edgeledger.chain.anvil import LocalAnvil
from edgeledger.chain.deploy import run_deploy_script
from edgeledger.db import make_engine, migrate
from edgeledger.ipfs.node import LocalIpfsNode
from tests.backend.support.ipfs import free_ports
from tests.backend.support.stack import free_port, rpc

MIB = 1024 * 1024


class SyntheticVideo:
    """A file-like MP4-looking body generated on the fly, so the client holds none of it in memory."""

    def __init__(self, size: int) -> None:
        self.remaining = size
        self.header = b"\x00\x00\x00\x18ftypisom" + os.urandom(12)

    def read(self, n: int = -1) -> bytes:
        if self.remaining <= 0:
            return b""
        n = self.remaining if n < 0 else min(n, self.remaining)
        chunk = self.header[:n] if self.header else os.urandom(n)
        self.header = self.header[len(chunk) :]
        self.remaining -= len(chunk)
        return chunk


def rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} missing")


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="edgeledger-bench-"))
    admin, signer, creator = Account.create(), Account.create(), Account.create()
    anvil = LocalAnvil(free_port(), log_file=work / "anvil.log")
    ports = free_ports(3)
    node = LocalIpfsNode(
        work / "ipfs",
        api_port=ports[0],
        gateway_port=ports[1],
        grpc_port=ports[2],
        log_file=work / "ipfs.log",
    )
    api: subprocess.Popen[bytes] | None = None
    try:
        anvil.start()
        anvil.wait_ready()
        for account in (admin, signer):
            rpc(anvil.rpc_url, "anvil_setBalance", account.address, hex(10**22))
        node.ensure_initialised()
        node.start()
        node.wait_ready()
        run_deploy_script(
            rpc_url=anvil.rpc_url,
            deployer_key=admin.key.to_0x_hex(),
            registrar=signer.address,
            deployment_file=work / "deployment.json",
        )
        db_url = f"sqlite:///{work / 'bench.db'}"
        migrate(db_url)
        engine = make_engine(db_url)
        with Session(engine) as session:
            user = auth_service.create_user(session, role=Role.creator, address=creator.address, name="bench")
            key, _ = auth_service.create_api_key(session, user, "bench")
            session.commit()
        engine.dispose()

        port = free_port()
        env = {
            **os.environ,
            "DATA_DIR": str(work),
            "DATABASE_URL": db_url,
            "ETH_RPC_URL": anvil.rpc_url,
            "IPFS_API": node.api_multiaddr,
            "DEPLOYMENT_FILE": str(work / "deployment.json"),
            "SIGNER_PRIVATE_KEY": signer.key.to_0x_hex(),
            "LOG_LEVEL": "WARNING",
        }
        uvicorn = str(Path(sys.executable).with_name("uvicorn"))
        api = subprocess.Popen(
            [
                uvicorn,
                "edgeledger.main:create_app",
                "--factory",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            env=env,
        )
        base = f"http://127.0.0.1:{port}"
        while True:
            try:
                if httpx.get(f"{base}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)

        idle, peaks, seconds = [], [], []
        for run in range(args.runs):
            idle.append(rss_kib(api.pid, "VmRSS"))
            reset_peak(api.pid)
            started = time.perf_counter()
            response = httpx.post(
                f"{base}/assets",
                headers={"X-API-Key": key},
                files={"file": ("clip.mp4", SyntheticVideo(args.size_mib * MIB), "video/mp4")},  # type: ignore[dict-item]
                data={"metadata": json.dumps({"title": f"bench {run}"})},
                timeout=httpx.Timeout(30, read=None, write=None),
            )
            seconds.append(time.perf_counter() - started)
            response.raise_for_status()
            peaks.append(rss_kib(api.pid, "VmHWM"))
            print(
                f"run {run + 1}: idle {idle[-1] / 1024:.0f} MiB, peak {peaks[-1] / 1024:.0f} MiB, "
                f"{seconds[-1]:.1f} s",
                flush=True,
            )

        median_idle = statistics.median(idle) / 1024
        median_peak = statistics.median(peaks) / 1024
        print()
        print(
            "| upload | runs | API idle RSS (median) | API peak RSS during upload (median) "
            "| peak / upload size | wall time (median) |"
        )
        print("|---|---|---|---|---|---|")
        print(
            f"| {args.size_mib} MiB | {args.runs} | {median_idle:.0f} MiB | {median_peak:.0f} MiB | "
            f"{median_peak / args.size_mib:.3f} | {statistics.median(seconds):.1f} s |"
        )
    finally:
        if api is not None:
            api.terminate()
            api.wait()
        node.stop()
        anvil.stop()


if __name__ == "__main__":
    main()
