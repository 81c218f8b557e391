#!/usr/bin/env python3
"""A TUF repository for ocigate's tests, written by python-tuf (the reference implementation).

    tuf-repo.py DIR init TARGET              keys, root v1, targets/snapshot/timestamp v1
    tuf-repo.py DIR rotate-root              root vN+1 with new root and timestamp keys
                                             (signed by the old and new root keys), then new
                                             timestamp/snapshot/targets signed with them
    tuf-repo.py DIR set-target TARGET        a new trusted_root.json: targets, snapshot, timestamp
    tuf-repo.py DIR timestamp [--expires S] [--snapshot-version N]
                                             a new timestamp (expiring in S seconds, may be
                                             negative; pinning snapshot version N: a rollback)

The repository is laid out as Sigstore's mirrors are: DIR/repo/{N.root.json, timestamp.json,
N.snapshot.json, N.targets.json, targets/HASH.trusted_root.json} (consistent snapshots); the
keys and versions are kept in DIR/state.json. DIR/repo/1.root.json is the bootstrap root.
"""

import hashlib
import json
import os
import sys
from datetime import datetime, timedelta, timezone

from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    MetaFile,
    Metadata,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer
from cryptography.hazmat.primitives import serialization

TARGET = "trusted_root.json"
ROLES = ["root", "timestamp", "snapshot", "targets"]


def later(seconds):
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).replace(microsecond=0)


def new_signer():
    return CryptoSigner.generate_ecdsa()


def pem_of(signer):
    return signer._private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def signer_of(pem, public):
    from securesystemslib.signer import SSlibKey

    key = serialization.load_pem_private_key(pem.encode(), None)
    return CryptoSigner(key, SSlibKey.from_dict(public["keyid"], dict(public["key"])))


class Repo:
    def __init__(self, d):
        self.d = d
        self.repo = os.path.join(d, "repo")
        path = os.path.join(d, "state.json")
        self.state = json.load(open(path)) if os.path.exists(path) else None

    def save(self):
        json.dump(self.state, open(os.path.join(self.d, "state.json"), "w"))

    def write(self, name, md):
        with open(os.path.join(self.repo, name), "wb") as f:
            f.write(md.to_bytes(JSONSerializer(compact=False)))

    def signers(self, role):
        return [signer_of(k["pem"], k["public"]) for k in self.state["keys"][role]]

    def keep(self, role, signer):
        public = {"keyid": signer.public_key.keyid, "key": signer.public_key.to_dict()}
        self.state["keys"][role] = [{"pem": pem_of(signer), "public": public}]

    def root(self, version, old_signers):
        root = Root(version=version, expires=later(365 * 86400), consistent_snapshot=True)
        for role in ROLES:
            for s in self.signers(role):
                root.add_key(s.public_key, role)
        md = Metadata(root)
        for s in old_signers + self.signers("root"):
            md.sign(s, append=True)
        self.write(f"{version}.root.json", md)
        self.state["root"] = version

    def targets(self, target_path):
        data = open(target_path, "rb").read()
        self.state["targets"] += 1
        v = self.state["targets"]
        t = Targets(version=v, expires=later(365 * 86400))
        t.targets[TARGET] = TargetFile.from_data(TARGET, data, ["sha256"])
        os.makedirs(os.path.join(self.repo, "targets"), exist_ok=True)
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(self.repo, "targets", f"{digest}.{TARGET}"), "wb") as f:
            f.write(data)
        md = Metadata(t)
        for s in self.signers("targets"):
            md.sign(s, append=True)
        self.write(f"{v}.targets.json", md)

    def snapshot(self):
        self.state["snapshot"] += 1
        v = self.state["snapshot"]
        snap = Snapshot(version=v, expires=later(365 * 86400))
        snap.meta["targets.json"] = MetaFile(version=self.state["targets"])
        md = Metadata(snap)
        for s in self.signers("snapshot"):
            md.sign(s, append=True)
        self.write(f"{v}.snapshot.json", md)

    def timestamp(self, expires=7 * 86400, snapshot_version=None):
        self.state["timestamp"] += 1
        ts = Timestamp(version=self.state["timestamp"], expires=later(expires))
        ts.snapshot_meta = MetaFile(version=snapshot_version or self.state["snapshot"])
        md = Metadata(ts)
        for s in self.signers("timestamp"):
            md.sign(s, append=True)
        self.write("timestamp.json", md)


def main(argv):
    d, cmd, rest = argv[1], argv[2], argv[3:]
    r = Repo(d)
    if cmd == "init":
        os.makedirs(r.repo, exist_ok=True)
        r.state = {"keys": {}, "root": 0, "targets": 0, "snapshot": 0, "timestamp": 0}
        for role in ROLES:
            r.keep(role, new_signer())
        r.root(1, [])
        r.targets(rest[0])
        r.snapshot()
        r.timestamp()
    elif cmd == "rotate-root":
        old = r.signers("root")
        r.keep("root", new_signer())
        r.keep("timestamp", new_signer())
        r.root(r.state["root"] + 1, old)
        r.snapshot()
        r.timestamp()
    elif cmd == "set-target":
        r.targets(rest[0])
        r.snapshot()
        r.timestamp()
    elif cmd == "timestamp":
        opts = dict(zip(rest[::2], rest[1::2]))
        snap = opts.get("--snapshot-version")
        r.timestamp(int(opts.get("--expires", 7 * 86400)), int(snap) if snap else None)
    else:
        sys.exit(f"tuf-repo.py: unknown command {cmd}")
    r.save()


if __name__ == "__main__":
    main(sys.argv)
