"""Runs the brownie deployment script (scripts/deploy.py) against any RPC endpoint."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount

from edgeledger.chain.anvil import anvil_rpc
from edgeledger.config import PROJECT_ROOT

TOOLCHAIN = PROJECT_ROOT / ".toolchain"


def brownie_env(extra: dict[str, str]) -> dict[str, str]:
    """Brownie's data folder and compiler live inside the project (see scripts/bootstrap.sh)."""
    path = os.pathsep.join(
        [str(TOOLCHAIN / "bin"), str(PROJECT_ROOT / "node_modules" / ".bin"), os.environ.get("PATH", "")]
    )
    return {
        **os.environ,
        "HOME": str(TOOLCHAIN / "brownie-home"),
        "SOLCX_BINARY_PATH": str(TOOLCHAIN / "solcx"),
        "PATH": path,
        **extra,
    }


def run_deploy_script(
    *,
    rpc_url: str,
    deployer_key: str,
    registrar: str,
    deployment_file: Path,
    arbiter: str | None = None,
    admin: str | None = None,
    test_token: bool = False,
    challenge_window: int | None = None,
    period_seconds: int | None = None,
) -> str:
    """Deploys unless `deployment_file` already names live contracts on this chain; returns the output.

    ``test_token`` also deploys the 6-decimal TestStablecoin (development chains only) and allow-lists it
    in the SettlementVault; ``challenge_window`` (seconds) is the vault's initial challenge window;
    ``period_seconds`` the vault's settlement period length (the service's ``delivery_period_seconds``).
    """
    env = {
        "ETH_RPC_URL": rpc_url,
        "DEPLOYER_PRIVATE_KEY": deployer_key,
        "REGISTRAR_ADDRESS": registrar,
        "DEPLOYMENT_FILE": str(deployment_file),
    }
    if test_token:
        env["DEPLOY_TEST_TOKEN"] = "1"  # noqa: S105 - a flag, not a secret
    if challenge_window is not None:
        env["SETTLEMENT_CHALLENGE_WINDOW"] = str(challenge_window)
    if period_seconds is not None:
        env["DELIVERY_PERIOD_SECONDS"] = str(period_seconds)
    if arbiter:
        env["ARBITER_ADDRESS"] = arbiter
    if admin:
        env["ADMIN_ADDRESS"] = admin
    # brownie's own command line, through a runner that also works from a folder whose path has a dot
    runner = [sys.executable, "-m", "edgeledger.chain.brownie_run"]
    for _attempt in range(3):
        _forget_brownie_deployments()
        result = subprocess.run(
            [*runner, "run", "scripts/deploy.py", "--network", "edgeledger-rpc"],
            cwd=PROJECT_ROOT,
            env=brownie_env(env),
            capture_output=True,
            text=True,
            check=False,
        )
        # Another deployment running at the same moment may have written its artifacts in between, or
        # removed them (``_forget_brownie_deployments``) while brownie was loading them at connect.
        output = result.stdout + result.stderr
        if result.returncode == 0 or not ("ContractNotFound" in output or "_load_deployments" in output):
            break
    if result.returncode != 0:
        raise RuntimeError(f"deployment failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout


@dataclass(frozen=True)
class LocalDeployment:
    """Contracts deployed on a development chain by :func:`deploy_with_fresh_keys`."""

    rpc_url: str
    deployment_file: Path
    #: deployed the contracts and proposes the timelock's operations (the admin)
    deployer: LocalAccount
    #: the API's server signer (REGISTRAR_ROLE, ANCHORER_ROLE, SETTLER_ROLE, ...)
    signer: LocalAccount


def deploy_with_fresh_keys(
    rpc_url: str, deployment_file: Path, *, balance_wei: int = 10**22, **options: Any
) -> LocalDeployment:
    """On an anvil: a new deployer key and a new server-signer key, each given ``balance_wei`` with
    ``anvil_setBalance``, then :func:`run_deploy_script` (``options``: its keyword arguments, such as
    ``test_token`` or ``challenge_window``). For the tests, the benchmarks and throwaway chains; keys
    never leave the process."""
    deployer, signer = Account.create(), Account.create()
    for account in (deployer, signer):
        anvil_rpc(rpc_url, "anvil_setBalance", account.address, hex(balance_wei))
    run_deploy_script(
        rpc_url=rpc_url,
        deployer_key=deployer.key.to_0x_hex(),
        registrar=signer.address,
        deployment_file=deployment_file,
        **options,
    )
    return LocalDeployment(rpc_url, deployment_file, deployer, signer)


def _forget_brownie_deployments() -> None:
    """Brownie keeps artifacts of deployments on "live" networks in build/deployments and, on connecting,
    fails if one has no code on the chain it attaches to: a throwaway anvil (tests, `up`) reusing chain id
    31337 trips over the previous run's. DEPLOYMENT_FILE is the record that counts. Only the files go (the
    folders stay, a deployment running concurrently writes into them)."""
    folder = PROJECT_ROOT / "build" / "deployments"
    for artifact in folder.glob("*/*.json"):
        artifact.unlink(missing_ok=True)
    (folder / "map.json").unlink(missing_ok=True)
