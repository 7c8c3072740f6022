"""The owners' CLI as a new user follows it: pubkey -> seal -> kubectl apply -> list -> set ->
history -> rollback, as real processes against the real control plane; and user mistakes end in
one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tests.support.space import Space

from spacesecrets.devtools.dev import wait_for


def run(kubeconfig: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    return subprocess.run(
        [sys.executable, "-m", "spacesecrets", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_round_trip_a_new_user_follows(space: Space, tmp_path: Path) -> None:
    cp = space.cluster.cp
    alice = cp.kubeconfig_for("alice@example.com")
    pem = tmp_path / "spacesecrets.pem"
    pem.write_text(ok(run(alice, "pubkey")))  # any authenticated user may read the public key
    values = tmp_path / "values.yaml"
    values.write_text("PRODUCT_A_API_HOST: api.example.com\nPRODUCT_A_CONFIG: {retries: 3}\n")
    sealed = ok(
        run(
            alice,
            "seal",
            str(values),
            "-n",
            space.ns,
            "--owner",
            "User:alice@example.com",
            "--cert",
            str(pem),
        )
    )
    assert "api.example.com" not in sealed
    doc = yaml.safe_load(sealed)
    assert doc["spec"]["data"]["PRODUCT_A_CONFIG"]["format"] == "json"
    cp.kubectl("apply", "-f", "-", input=sealed)  # the platform creates the first store
    space.wait_version(1)
    wait_for(
        "alice's RoleBinding", lambda: space.kube.get_role_binding(space.ns, "spacesecrets-owners")
    )

    listing = wait_for("alice may list", lambda: run(alice, "list", "-n", space.ns).stdout)
    assert "version 1" in listing
    assert "PRODUCT_A_API_HOST  text" in listing and "PRODUCT_A_CONFIG    json" in listing
    assert "api.example.com" not in listing

    ok(run(alice, "set", "PRODUCT_A_API_HOST", "-n", space.ns, stdin="api-v2.example.com\n"))
    space.wait_version(2)
    ok(run(alice, "set", "PRODUCT_A_CONFIG", "--json", "-n", space.ns, stdin='{"retries": 5}'))
    space.wait_version(3)
    history = ok(run(alice, "history", "-n", space.ns))
    rows = [line.split()[0] for line in history.splitlines()[1:]]
    assert rows == ["3", "2", "1"]

    out = ok(run(alice, "rollback", "--to", "1", "-n", space.ns))
    assert "version 1 restored as version 4" in out
    assert "rollback of 1" in ok(run(alice, "history", "-n", space.ns)).splitlines()[1]

    ok(run(alice, "unset", "PRODUCT_A_CONFIG", "-n", space.ns))
    status = space.wait_version(5)["status"]
    assert [k["name"] for k in status["keys"]] == ["PRODUCT_A_API_HOST"]
    assert "version 5" in ok(run(alice, "status", "-n", space.ns))


def test_seal_reads_dotenv(tmp_path: Path, space: Space) -> None:
    pem = tmp_path / "k.pem"
    pem.write_text(ok(run(space.cluster.kubeconfig, "pubkey")))
    env_file = tmp_path / "app.env"
    env_file.write_text("# comment\nexport DB_USER=admin\nDB_PASSWORD='p w'\n")
    doc = yaml.safe_load(
        ok(
            run(
                space.cluster.kubeconfig,
                "seal",
                str(env_file),
                "-n",
                space.ns,
                "--owner",
                "Group:ops",
                "--cert",
                str(pem),
            )
        )
    )
    assert sorted(doc["spec"]["data"]) == ["DB_PASSWORD", "DB_USER"]
    space.kubectl_apply(doc)
    space.wait_version(1)


@pytest.mark.parametrize(
    ("args", "stdin", "phrase"),
    [
        (("set", "1BAD"), "x", "is not a valid KEY"),
        (("set", "GOOD", "--json"), "{not json", "JSON value is not valid for flows"),
        (("rollback", "--to", "99"), None, "not in the history"),
        (("unset", "NOPE"), None, "has no key NOPE"),
        (("seal", "-", "--owner", "User:a", "--format", "yaml"), "a: [", "not valid YAML"),
        (("seal", "-", "--format", "yaml"), "A: b", "at least one owner"),
        (("seal", "-", "--owner", "Robot:x", "--format", "yaml"), "A: b", "Kind:name"),
        (
            ("seal", "-", "--owner", "User:a", "--format", "yaml"),
            "!!python/object/apply:os.system ['true']",
            "not valid YAML",
        ),
        (("list",), None, "has no SpaceSecrets"),
    ],
    ids=[
        "bad-key",
        "bad-json",
        "unknown-version",
        "unknown-key",
        "broken-yaml",
        "no-owner",
        "bad-owner",
        "hostile-yaml",
        "no-space",
    ],
)
def test_user_mistakes_get_one_clear_line(
    space: Space, args: tuple[str, ...], stdin: str | None, phrase: str
) -> None:
    if args[0] != "list":
        space.apply({"A": "1"})
        space.wait_version(1)
    line = one_line_error(run(space.cluster.kubeconfig, *args, "-n", space.ns, stdin=stdin))
    assert phrase in line


def test_non_owner_is_refused_with_a_readable_line(space: Space) -> None:
    space.apply({"A": "1"})
    space.wait_version(1)
    mallory = space.cluster.cp.kubeconfig_for("mallory@example.com")
    line = one_line_error(run(mallory, "set", "A", "-n", space.ns, stdin="forged"))
    assert "forbidden" in line.lower() or "only owners" in line
