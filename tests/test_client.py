"""push and watch against the running portal (embedded defaults, with its worker) and real samples."""
import fcntl
import hashlib
import re
import shutil
import subprocess
import sys
import threading
import time

import pytest

from app.client import FINAL, ClientError, PortalClient
from app.client.push import collect, push
from app.client.watch import Watcher
from tests.helpers import ROOT, SAMPLES, ome_tiff
from tests.sse_clients import signed_in


@pytest.fixture
def portal(served):
    return served


def client_for(base, username):
    session, _ = signed_in(base, username)
    return PortalClient(base, session=session)


def samples_folder(tmp_path, *names):
    folder = tmp_path / "session-7"
    folder.mkdir()
    for name in names:
        shutil.copy(SAMPLES / name, folder / name)
    return folder


def test_push_a_folder_of_samples_groups_converts_and_reports_each_job(portal, tmp_path):
    folder = samples_folder(tmp_path, "fei_example_tem_stack.emd", "128x128_TEM_acquire-sum1.emi",
                            "128x128_TEM_acquire-sum1_1.ser", "sample6_001.tif", "16x16_STEM_BF_DF_acquire_1.ser")
    files, name = collect([folder])
    assert name == "session-7" and set(files) == {f"session-7/{p.name}" for p in folder.iterdir()}
    jobs, sha1s = push(client_for(portal, "alice"), files, None, [("Sample", "S1")], name)
    states = {" + ".join(f["name"].split("/")[-1] for f in j["files"]): (j["state"], j["project"]) for j in jobs}
    assert states["fei_example_tem_stack.emd"] == ("imported", "Titan")
    assert states["128x128_TEM_acquire-sum1.emi + 128x128_TEM_acquire-sum1_1.ser"][0] == "imported"
    assert states["sample6_001.tif"] == ("imported", "GeminiSEM 450")
    assert states["16x16_STEM_BF_DF_acquire_1.ser"][0] == "failed"
    assert "session-7/16x16_STEM_BF_DF_acquire_1.ser" not in sha1s  # refused before any byte was sent


def test_a_restarted_watcher_sends_nothing_twice_and_finishes_what_it_began(portal, tmp_path):
    folder = tmp_path / "incoming"
    folder.mkdir()
    (folder / "a.ome.tif").write_bytes(ome_tiff(seed=1))
    (folder / "b.ome.tif").write_bytes(ome_tiff(seed=2))
    client = client_for(portal, "bob")
    real_send, calls = client.send, []

    def dies_after_first(remote, path, progress, sha1, **options):
        if calls:
            raise KeyboardInterrupt("the watcher is killed mid-batch")
        calls.append(remote["name"])
        return real_send(remote, path, progress, sha1, **options)

    client.send = dies_after_first
    first = Watcher(client, folder, stable_seconds=0)
    with pytest.raises(KeyboardInterrupt):
        first.send_ready()
    client.send = real_send
    second = Watcher(client, folder, stable_seconds=0)  # a new process: only the ledger is kept
    second.run(interval=0.5, rounds=2)
    assert second.send_ready() == 0
    batches = client._call("GET", "/api/batches")["batches"]
    assert len(batches) == 1 and sum(batches[0]["states"].values()) == 2


def settle(watcher, *names, timeout=60):
    """Let the watcher check its jobs until each named file's job has ended (deleting what it may)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        watcher.check()
        if all(watcher.ledger.get(name, {}).get("state") in FINAL for name in names):
            return
        time.sleep(0.5)
    raise AssertionError(f"the jobs of {names} did not end: {watcher.ledger}")


def test_delete_after_import_deletes_only_what_omero_confirms(portal, tmp_path):
    folder = tmp_path / "incoming"
    folder.mkdir()
    broken, good = folder / "broken.tif", folder / "good.ome.tif"
    broken.write_bytes(b"II*\x00" + b"\x00" * 64)
    content = ome_tiff(seed=5)
    good.write_bytes(content)
    watcher = Watcher(client_for(portal, "carol"), folder, stable_seconds=0, delete_after_import=True)
    assert watcher.send_ready() == 2
    settle(watcher, "good.ome.tif", "broken.tif")
    assert not good.exists() and watcher.ledger["good.ome.tif"]["state"] == "imported"
    assert broken.exists() and watcher.ledger["broken.tif"]["state"] == "failed"  # a failed import stays

    copy = folder / "copy.ome.tif"  # the same bytes under another name: OMERO holds them already
    copy.write_bytes(content)
    good.write_bytes(ome_tiff(seed=6))  # the old name with new content: not a duplicate
    assert watcher.send_ready() == 2
    settle(watcher, "copy.ome.tif", "good.ome.tif")
    assert watcher.ledger["copy.ome.tif"]["state"] == "duplicate" and not copy.exists()
    assert watcher.ledger["good.ome.tif"]["state"] == "imported" and not good.exists()
    assert broken.exists()


def test_a_file_changed_after_sending_is_never_deleted(portal, tmp_path):
    folder = tmp_path / "incoming"
    folder.mkdir()
    path = folder / "a.ome.tif"
    path.write_bytes(ome_tiff(seed=7))
    watcher = Watcher(client_for(portal, "dave"), folder, stable_seconds=0, delete_after_import=True)
    watcher.send_ready()
    path.write_bytes(ome_tiff(seed=8))  # rewritten by the microscope software after it was sent
    settle(watcher, "a.ome.tif")
    assert path.exists() and watcher.ledger["a.ome.tif"]["state"] == "imported"


def make_token(base, username):
    session, _ = signed_in(base, username)
    return session.post(base + "/api/tokens", json={"name": "microscope PC"}).json()["token"]


def run_cli(*args, token, timeout=240):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_")} | {"PORTAL_TOKEN": token}
    return subprocess.run([sys.executable, "-m", "app.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_the_push_command_with_an_api_token_reports_json_and_fails_on_a_failed_job(portal, tmp_path):
    import json

    folder = samples_folder(tmp_path, "sample6_001.tif", "16x16_STEM_BF_DF_acquire_1.ser")
    (folder / "notes.txt").write_text("grid 7, 300 kV")  # a folder's notes: skipped, not failed
    token = make_token(portal, "erin")
    result = run_cli("push", str(folder), "--server", portal, "--json", "--kv", "Sample=S9", token=token)
    assert result.returncode == 1, result.stderr
    jobs = {(job := json.loads(line))["files"][0].rsplit("/", 1)[-1]: job for line in result.stdout.splitlines()}
    assert {name: job["state"] for name, job in jobs.items()} == {
        "sample6_001.tif": "imported", "16x16_STEM_BF_DF_acquire_1.ser": "failed"}
    assert "skipped session-7/notes.txt (.txt files)" in result.stderr
    assert jobs["sample6_001.tif"]["link"].startswith(f"{portal}/store/image/")  # usable outside the portal
    assert jobs["sample6_001.tif"]["images"] == ["sample6_001.tif"]  # every image the import made, by name
    refused = run_cli("push", str(folder), "--server", portal, token="omp_not-a-token")
    assert refused.returncode == 1 and "upload-portal push:" in refused.stderr


def test_a_watch_process_killed_and_restarted_sends_each_file_once(portal, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    folder = tmp_path / "export"
    folder.mkdir()
    for seed in range(3):
        (folder / f"{seed}.ome.tif").write_bytes(ome_tiff(seed=50 + seed))
    token = make_token(portal, "finn")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_")} | {"PORTAL_TOKEN": token}
    command = [sys.executable, "-m", "app.cli", "watch", str(folder), "--server", portal, "--stable", "0",
               "--interval", "0.3"]
    ledger = folder / ".upload-portal-ledger.json"
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not ledger.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGKILL)  # as soon as it has begun: mid-batch
    first.wait()
    (folder / "late.ome.tif").write_bytes(ome_tiff(seed=60))
    second = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = PortalClient(portal, token)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            batches = client._call("GET", "/api/batches")["batches"]
            if sum(b["states"].get("imported", 0) for b in batches) >= 4:
                break
            time.sleep(0.5)
    finally:
        second.terminate()
        second.wait()
    names = [f["name"] for b in batches for j in client.batch(b["id"])["jobs"] for f in j["files"]]
    assert sorted(names) == ["0.ome.tif", "1.ome.tif", "2.ome.tif", "late.ome.tif"]


def test_staff_push_for_a_user_and_the_images_are_theirs(embedded_stack, tmp_path):
    from app.client import ClientError
    from tests.helpers import start_served

    portal, process = start_served(embedded_stack | {"PORTAL_STAFF_USERS": "sam"}, tmp_path)
    try:
        gina, _ = signed_in(portal, "gina")  # to learn gina's groups
        groups = gina.get(portal + "/api/me").json()["groups"]
        (tmp_path / "g.ome.tif").write_bytes(ome_tiff(seed=70))
        files, _ = collect([tmp_path / "g.ome.tif"])
        jobs, _ = push(client_for(portal, "sam"), files, str(groups[1]["id"]), [], None, on_behalf_of="gina")
        assert [j["state"] for j in jobs] == ["imported"]
        mine = gina.get(portal + "/api/batches").json()["batches"]
        assert len(mine) == 1 and mine[0]["group_name"] == groups[1]["name"]
        with pytest.raises(ClientError, match="Facility staff only"):
            push(client_for(portal, "hank"), files, str(groups[0]["id"]), [], None, on_behalf_of="gina")
    finally:
        process.stop()


def test_a_file_busy_on_the_server_is_waited_for_not_given_up(embedded_stack, served, tmp_path):
    """An earlier PUT of ours that the client gave up on may still be writing on the server (409):
    the server waits for it instead of refusing the chunk, and the file is not failed."""
    client = client_for(served, "cleo")
    client._wait = lambda attempt, why: time.sleep(0.5)  # keep the back-off short here
    path = tmp_path / "busy.ome.tif"
    path.write_bytes(ome_tiff(seed=77))
    batch = client.create_batch(client.group_id(None), {"busy.ome.tif": path}, [], None)
    remote = batch["jobs"][0]["files"][0]
    staged = tmp_path / "data" / "staging" / str(batch["jobs"][0]["id"]) / "busy.ome.tif"
    staged.parent.mkdir(parents=True)
    with open(staged, "ab") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # what the server's own writer holds while it writes
        threading.Timer(2.0, fcntl.flock, (held, fcntl.LOCK_UN)).start()
        client.send(remote, path, lambda *a: None, lambda: hashlib.sha1(path.read_bytes()).hexdigest())
    assert client.batch(batch["id"])["jobs"][0]["state"] != "uploading"


def test_a_file_sent_from_its_start_is_read_once_and_a_resumed_one_hashed_whole(embedded_stack, served, tmp_path,
                                                                                 monkeypatch):
    """The SHA-1 of a file OMERO cannot hold is taken from the chunks as they are sent (a network
    share is read once, not twice); sending resumed mid-file hashes the file whole. Either way the
    server checks it (a wrong SHA-1 would be refused)."""
    import app.client as client_module

    monkeypatch.setattr(client_module, "CHUNK", 1 << 16)  # several chunks of a small file
    client = client_for(served, "dora")
    data = ome_tiff((256, 256), seed=78)
    (tmp_path / "once.ome.tif").write_bytes(data)
    (tmp_path / "resumed.ome.tif").write_bytes(data[::-1])
    files = {name: tmp_path / name for name in ("once.ome.tif", "resumed.ome.tif")}
    batch = client.create_batch(client.group_id(None), files, [], None)
    once, resumed = (job["files"][0] for job in batch["jobs"])
    client._call("PUT", f"/api/files/{resumed['id']}?offset=0", data=data[::-1][:1000])  # an earlier try's bytes
    whole = []

    def read_whole(path):
        whole.append(path.name)
        return hashlib.sha1(path.read_bytes()).hexdigest()

    assert client.send(once, files["once.ome.tif"], lambda *a: None, lambda: read_whole(files["once.ome.tif"])) \
        == hashlib.sha1(data).hexdigest()
    assert client.send(resumed, files["resumed.ome.tif"], lambda *a: None,
                       lambda: read_whole(files["resumed.ome.tif"])) == hashlib.sha1(data[::-1]).hexdigest()
    assert whole == ["resumed.ome.tif"]
    assert all(f["complete"] for job in client.batch(batch["id"])["jobs"] for f in job["files"])


@pytest.mark.parametrize("change", ["shrinks", "grows", "is deleted"])
def test_a_file_that_changes_while_it_is_sent_is_never_completed(served, tmp_path, monkeypatch, change):
    """A file still being written (a microscope saving it) is refused with why, not sent for ever (it
    shrank: nothing more to read) nor completed as what the batch declared (it grew)."""
    import app.client as client_module

    monkeypatch.setattr(client_module, "CHUNK", 1 << 16)
    client = client_for(served, "gus")
    path = tmp_path / f"{change.replace(' ', '-')}.ome.tif"
    data = ome_tiff((256, 256), seed=79)
    path.write_bytes(data)
    batch = client.create_batch(client.group_id(None), {path.name: path}, [], None)
    remote = batch["jobs"][0]["files"][0]
    if change == "is deleted":
        path.unlink()
        expected = f"{path.name} is gone: it was deleted or moved after the batch was made"
    else:
        path.write_bytes(data[:len(data) // 2] if change == "shrinks" else data + b"more")
        expected = (f"{path.name} changed while it was sent ({len(data):,} bytes when the batch was made, "
                    f"{path.stat().st_size:,} now): is it still being written")
    with pytest.raises(ClientError, match=re.escape(expected)):
        client.send(remote, path, lambda *a: None, lambda: hashlib.sha1(path.read_bytes()).hexdigest())
    assert not client.batch(batch["id"])["jobs"][0]["files"][0]["complete"]


TIA_PAIR = ("128x128_TEM_acquire-sum1.emi", "128x128_TEM_acquire-sum1_1.ser")


def test_delete_after_import_deletes_a_converted_pair_once_omero_holds_both_originals(portal, tmp_path):
    folder = samples_folder(tmp_path, *TIA_PAIR)
    watcher = Watcher(client_for(portal, "erin"), folder, stable_seconds=0, delete_after_import=True)
    assert watcher.send_ready() == 1
    settle(watcher, *TIA_PAIR)
    assert watcher.ledger[TIA_PAIR[0]]["state"] == "imported"
    assert not any((folder / name).exists() for name in TIA_PAIR)


@pytest.fixture
def originals_off(embedded_stack):
    embedded_stack["PORTAL_KEEP_ORIGINALS"] = "false"


def test_with_originals_off_watch_keeps_converted_files_and_says_why(originals_off, portal, tmp_path, caplog):
    folder = samples_folder(tmp_path, *TIA_PAIR)
    watcher = Watcher(client_for(portal, "fay"), folder, stable_seconds=0, delete_after_import=True)
    watcher.send_ready()
    with caplog.at_level("WARNING", logger="app.client.watch"):
        settle(watcher, *TIA_PAIR)
    assert all((folder / name).exists() for name in TIA_PAIR)
    assert "PORTAL_KEEP_ORIGINALS is off" in watcher.ledger[TIA_PAIR[0]]["kept"]
    assert "PORTAL_KEEP_ORIGINALS is off" in caplog.text


def test_push_marks_an_import_to_check_and_says_what_it_holds():
    import io

    from app.client.push import table

    job = {"state": "imported", "files": [{"name": "a.emi"}, {"name": "a_1.ser"}], "link": "https://omero/x",
           "message": "", "summary": "2 images, 1 spectrum attached, originals kept",
           "warnings": ["acquisition date unknown"]}
    out = io.StringIO()
    table([job], out)
    assert out.getvalue().splitlines()[1].split("  ") == [
        "imported, check", "a.emi + a_1.ser",
        "https://omero/x (2 images, 1 spectrum attached, originals kept); check: acquisition date unknown"]


def test_push_sends_nothing_of_a_file_omero_already_holds(portal, tmp_path):
    first, again = tmp_path / "run.ome.tif", tmp_path / "copy" / "run again.ome.tif"
    again.parent.mkdir()
    first.write_bytes(ome_tiff(seed=61))
    shutil.copy(first, again)
    client = client_for(portal, "fred")
    calls = []
    real_call = client._call
    client._call = lambda method, path, **kw: calls.append((method, path)) or real_call(method, path, **kw)
    (job,), _ = push(client, {"run.ome.tif": first}, None, [], None)
    assert job["state"] == "imported"
    # OMERO held nothing of this size: sent at once (hashed meanwhile), never checked first
    assert not any(path.endswith("/check") for _, path in calls) and ("PUT", f"/api/files/{job['files'][0]['id']}?offset=0") in calls
    calls.clear()
    (job,), sha1s = push(client, {"run again.ome.tif": again}, None, [], None)
    assert job["state"] == "duplicate" and not [c for c in calls if c[0] == "PUT"]
    assert any(path.endswith("/check") for _, path in calls)
    assert sha1s == {"run again.ome.tif": hashlib.sha1(again.read_bytes()).hexdigest()}
    assert client.confirm(job["id"])["in_omero"]


LIGHT_CLIENT = """
import importlib.abc, sys

class NoServerStack(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"flask", "numpy", "h5py", "tifffile", "sqlalchemy", "celery", "rsciio"}:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, NoServerStack())
from app.cli import main
from converters import group_files
assert [g.kind for g in group_files(["a.emi", "a_1.ser", "b.tif"])] == ["tia", "single"]
for command in ("push", "watch"):
    try:
        main([command, "--help"])
    except SystemExit as e:
        assert e.code == 0, e.code
print(main(["serve"]))
"""


def test_push_and_watch_run_without_flask_numpy_or_h5py():
    """What a microscope PC with the client alone (no extras) has: push and watch work, group files
    as the server does, and a server command says which install it needs."""
    run = subprocess.run([sys.executable, "-c", LIGHT_CLIENT], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "usage: upload-portal push" in run.stdout and "usage: upload-portal watch" in run.stdout
    assert run.stdout.strip().endswith("2")
    assert "pip install 'omero-upload-portal[server]'" in run.stderr


@pytest.mark.parametrize("server, reason", [("http://portal.invalid", "no computer has that name"),
                                            ("http://127.0.0.1:{port}", "nothing answers on that port")])
def test_a_mistyped_server_fails_at_once_with_a_plain_message(server, reason, monkeypatch):
    from app.client import ClientError
    from tests.helpers import free_port

    waited = []
    monkeypatch.setattr(time, "sleep", waited.append)
    client = PortalClient(server.format(port=free_port()), token="omp_x")
    with pytest.raises(ClientError) as refused:
        client.me()
    message = str(refused.value)
    assert reason in message and "check the address given with --server" in message
    assert waited == [] and "urllib3" not in message and "HTTPConnection" not in message
