#!/usr/bin/env python3
"""Cairn benchmark harness (issue 6).

Builds a deterministic VM-disk workload, then runs Cairn, restic and borg on it in
interleaved rounds, timing every step (wall clock and peak RSS of the child), and writes
medians, ratios and goal checks to a JSON file.  Standard library only (Python 3.11).

See Benchmarks/README.md.  Normally started through Benchmarks/run.sh.
"""

import argparse
import datetime
import errno
import hashlib
import html
import json
import os
import shlex
import platform
import random
import re
import shutil
import stat
import statistics
import subprocess
import sys
import time
import urllib.parse
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(HERE)

WORKLOAD_VERSION = 1  # bump when the workload recipe changes (invalidates cached workloads)
FIXED_TIME = 1764115200  # 2025-11-26T00:00:00Z: mtime of every staged file, mkfs fake time
DISK_GUID = "5A1B0C2D-0000-4000-8000-00000000C0DE"
PART_GUID = "5A1B0C2D-0000-4000-8000-00000000FA11"
FS_UUID = "c0ffee00-cafe-4bad-8000-00000000ba5e"
FILE_ROOTS = ["/usr/include", "/usr/bin", "/usr/share", "/usr/lib"]
MIB = 1 << 20

ALL_TOOLS = ["cairn", "cairn-enc", "cairn-s3", "restic", "borg", "borg-fixed4M"]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run(cmd, **kw):
    """Run a setup command (not timed); fail loudly."""
    kw.setdefault("check", True)
    return subprocess.run(cmd, **kw)


# --------------------------------------------------------------------------------------
# Workload
# --------------------------------------------------------------------------------------

def workload_params(args):
    s = args.scale

    def mib(env, default):
        v = os.environ.get(env)
        return int(v) if v else max(1, int(round(default * s)))

    return {
        "version": WORKLOAD_VERSION,
        "disk_mib": max(32, mib("CAIRN_BENCH_DISK_MIB", 2048)),
        "fill": args.fill,
        "night_pct": args.night_pct,
        "zero_mib": mib("CAIRN_BENCH_ZERO_MIB", 8192),
        "random_mib": mib("CAIRN_BENCH_RANDOM_MIB", 1024),
        "seed": args.seed,
        "file_roots": FILE_ROOTS,
    }


def list_regular_files(root):
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = os.path.join(dirpath, name)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and os.access(p, os.R_OK):
                out.append((p, st.st_size, st.st_mode & 0o755))
    return out


def choose_files(budget):
    """Round-robin over the roots (each in sorted order) until the byte budget is used."""
    lists = [list_regular_files(r) for r in FILE_ROOTS if os.path.isdir(r)]
    pos = [0] * len(lists)
    chosen, used = [], 0
    active = True
    while active and budget - used >= 4096:
        active = False
        for i, lst in enumerate(lists):
            while pos[i] < len(lst):
                p, size, mode = lst[pos[i]]
                pos[i] += 1
                cost = max(4096, (size + 4095) // 4096 * 4096)
                if used + cost <= budget:
                    chosen.append((p, size, mode))
                    used += cost
                    active = True
                    break
    return chosen, used


def stage_files(files, stage):
    dirs = set()
    for p, _size, mode in files:
        dst = os.path.join(stage, p.lstrip("/"))
        d = os.path.dirname(dst)
        if d not in dirs:
            os.makedirs(d, exist_ok=True)
            dirs.add(d)
        shutil.copyfile(p, dst)
        os.chmod(dst, mode | 0o644)
        os.utime(dst, (FIXED_TIME, FIXED_TIME))
    alldirs = set()
    for d in dirs:
        while d.startswith(stage) and d != stage:
            alldirs.add(d)
            d = os.path.dirname(d)
    for d in sorted(alldirs, reverse=True):
        os.chmod(d, 0o755)
        os.utime(d, (FIXED_TIME, FIXED_TIME))
    return len(alldirs)


def gpt_partition(disk):
    run(["sgdisk", "-o", "-n", "1:2048:0", "-t", "1:8300", "-c", "1:cairn-bench-root",
         "-U", DISK_GUID, "-u", "1:" + PART_GUID, disk],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    info = run(["sgdisk", "-i", "1", disk], capture_output=True, text=True).stdout
    first = int(re.search(r"First sector: (\d+)", info).group(1))
    last = int(re.search(r"Last sector: (\d+)", info).group(1))
    return first * 512, (last + 1) * 512


def zero_sample_ratio(path, size):
    """Rough compressibility of the non-zero data: zlib -1 on 1 MiB every 16 MiB."""
    raw = comp = 0
    with open(path, "rb") as f:
        for off in range(0, size, 16 * MIB):
            f.seek(off)
            b = f.read(MIB)
            if not b or b.count(0) == len(b):
                continue
            raw += len(b)
            comp += len(zlib.compress(b, 1))
    return round(comp / raw, 3) if raw else None


def make_night(src, dst, seed, target, lo, hi, log_path):
    """Copy src to dst and apply ~target bytes of scattered guest writes inside [lo, hi)."""
    run(["cp", "--sparse=always", "--reflink=auto", src, dst])
    rng = random.Random(seed)
    extents = []
    written = 0
    fd = os.open(dst, os.O_RDWR)
    try:
        while written < target:
            units = max(1, int(round(2 ** rng.uniform(0, 8))))  # 4 KiB .. 1 MiB, log-uniform
            size = min(units * 4096, max(4096, (target - written + 4095) // 4096 * 4096))
            off = lo + rng.randrange((hi - lo - size) // 4096 + 1) * 4096
            if rng.random() < 0.5:
                kind, data, srcoff = "random", rng.randbytes(size), None
            else:
                kind = "copy"
                for _ in range(16):  # prefer a source extent that holds data
                    srcoff = lo + rng.randrange((hi - lo - size) // 4096 + 1) * 4096
                    data = os.pread(fd, size, srcoff)
                    if data.count(0) != len(data):
                        break
            os.pwrite(fd, data, off)
            extents.append({"offset": off, "length": size, "kind": kind, "from": srcoff})
            written += size
        os.fsync(fd)
    finally:
        os.close(fd)
    with open(log_path, "w") as f:
        json.dump(extents, f, indent=0)
    return {"extents": len(extents), "bytes": written,
            "random_bytes": sum(e["length"] for e in extents if e["kind"] == "random")}


def build_workload(args, work):
    p = workload_params(args)
    key = hashlib.sha256(json.dumps(p, sort_keys=True).encode()).hexdigest()[:10]
    d = os.path.join(work, "workload", f"wl-{p['disk_mib']}M-{key}")
    meta_path = os.path.join(d, "workload.json")
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        log(f"workload: reusing {d}")
        meta["dir"] = d
        meta["reused"] = True
        return meta

    tmp = d + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    t0 = time.monotonic()
    disk_bytes = p["disk_mib"] * MIB
    meta = {"params": p, "key": key}

    # 1. the base disk: GPT + ext4 ~fill% full of real files
    base = os.path.join(tmp, "base.raw")
    with open(base, "wb") as f:
        f.truncate(disk_bytes)
    part_lo, part_hi = gpt_partition(base)
    part_bytes = (part_hi - part_lo) // 4096 * 4096
    part_img = os.path.join(tmp, "part.img")
    # what an empty ext4 of this size already uses (inode tables, journal), so that the
    # filesystem ends up about fill% used in df terms
    with open(part_img, "wb") as f:
        f.truncate(part_bytes)
    env = dict(os.environ, E2FSPROGS_FAKE_TIME=str(FIXED_TIME))
    run(["mkfs.ext4", "-q", "-F", "-b", "4096", "-E", "nodiscard", part_img,
         str(part_bytes // 1024) + "k"], env=env)
    dump = run(["dumpe2fs", "-h", part_img], stdout=subprocess.PIPE, text=True,
               stderr=subprocess.DEVNULL).stdout
    empty_used = (int(re.search(r"Block count:\s+(\d+)", dump).group(1))
                  - int(re.search(r"Free blocks:\s+(\d+)", dump).group(1))) * 4096
    os.unlink(part_img)
    budget = max(MIB, int(part_bytes * p["fill"]) - empty_used)
    log(f"workload: choosing files from {', '.join(FILE_ROOTS)} for {budget / MIB:.0f} MiB")
    files, used = choose_files(budget)
    stage = os.path.join(tmp, "stage")
    ndirs = stage_files(files, stage)
    log(f"workload: staged {len(files)} files ({sum(s for _, s, _ in files) / MIB:.0f} MiB)"
        f" in {ndirs} directories")
    with open(part_img, "wb") as f:
        f.truncate(part_bytes)
    inodes = max(part_bytes // 16384, int((len(files) + ndirs) * 1.3) + 1024)
    run(["mkfs.ext4", "-q", "-F", "-b", "4096", "-L", "cairn-bench", "-U", FS_UUID,
         "-N", str(inodes), "-E", f"nodiscard,root_owner=0:0,hash_seed={FS_UUID}",
         "-d", stage, part_img, str(part_bytes // 1024) + "k"], env=env)
    dump = run(["dumpe2fs", "-h", part_img], stdout=subprocess.PIPE, text=True,
               stderr=subprocess.DEVNULL).stdout
    bcount = int(re.search(r"Block count:\s+(\d+)", dump).group(1))
    bfree = int(re.search(r"Free blocks:\s+(\d+)", dump).group(1))
    run(["dd", f"if={part_img}", f"of={base}", "bs=1M", "oflag=seek_bytes",
         f"seek={part_lo}", "conv=notrunc,sparse", "status=none"])
    os.unlink(part_img)
    shutil.rmtree(stage)
    run(["sgdisk", "-v", base], stdout=subprocess.DEVNULL)
    meta["base"] = {
        "path": "base.raw", "bytes": disk_bytes, "partition": [part_lo, part_hi],
        "files": len(files), "file_bytes": sum(s for _, s, _ in files), "dirs": ndirs,
        "fs_used_pct": round(100.0 * (bcount - bfree) / bcount, 1),
        "zlib1_ratio_sample": zero_sample_ratio(base, disk_bytes),
    }
    log(f"workload: base disk built, ext4 {meta['base']['fs_used_pct']}% used")
    run(["qemu-img", "convert", "-O", "qcow2", base, os.path.join(tmp, "base.qcow2")])

    # 2. nights 1 and 2: ~night_pct% of the disk rewritten each night (cumulative)
    target = int(disk_bytes * p["night_pct"] / 100)
    prev = base
    meta["nights"] = {}
    for n in (1, 2):
        dst = os.path.join(tmp, f"night{n}.raw")
        info = make_night(prev, dst, p["seed"] * 1000 + n, target, part_lo, part_hi,
                          os.path.join(tmp, f"night{n}-writes.json"))
        run(["qemu-img", "convert", "-O", "qcow2", dst, os.path.join(tmp, f"night{n}.qcow2")])
        meta["nights"][str(n)] = dict(info, path=f"night{n}.raw")
        prev = dst
        log(f"workload: night {n}: {info['extents']} extents, {info['bytes'] / MIB:.1f} MiB")

    # 3. an all-zero sparse disk and an incompressible disk
    with open(os.path.join(tmp, "zero.raw"), "wb") as f:
        f.truncate(p["zero_mib"] * MIB)
    rnd = os.path.join(tmp, "random.raw")
    keyhex = hashlib.sha256(f"cairn-bench-{p['seed']}".encode()).hexdigest()
    with open(rnd, "wb") as out:
        head = subprocess.Popen(["head", "-c", str(p["random_mib"] * MIB), "/dev/zero"],
                                stdout=subprocess.PIPE)
        run(["openssl", "enc", "-aes-128-ctr", "-nosalt", "-K", keyhex[:32],
             "-iv", keyhex[32:64]], stdin=head.stdout, stdout=out)
        head.stdout.close()
        head.wait()
    meta["zero"] = {"path": "zero.raw", "bytes": p["zero_mib"] * MIB}
    meta["random"] = {"path": "random.raw", "bytes": p["random_mib"] * MIB}
    meta["build_seconds"] = round(time.monotonic() - t0, 1)
    with open(os.path.join(tmp, "workload.json"), "w") as f:
        json.dump(meta, f, indent=2)
    os.rename(tmp, d)
    log(f"workload: built in {meta['build_seconds']} s at {d}")
    meta["dir"] = d
    meta["reused"] = False
    return meta


# --------------------------------------------------------------------------------------
# Measurement helpers
# --------------------------------------------------------------------------------------

GNU_TIME = "/usr/bin/time"


def timed(cmd, logf, env=None, cwd=None):
    """Run cmd; return rc, wall seconds and peak RSS (KiB).

    Wall time is measured here (monotonic clock).  Peak RSS comes from GNU time's %M (the
    child's ru_maxrss), because a child forked straight from this Python process inherits
    Python's own high-water mark in ru_maxrss when it execs.  Without /usr/bin/time we fall
    back to os.wait4 and say so in the result."""
    rss_file = logf + ".rss"
    use_time = os.access(GNU_TIME, os.X_OK)
    full = [GNU_TIME, "-q", "-f", "%M", "-o", rss_file, "--"] + cmd if use_time else cmd
    with open(logf, "ab") as lf:
        lf.write(("\n$ " + " ".join(cmd) + "\n").encode())
        lf.flush()
        # Dirty pages of the step before (a restore's gigabytes) are written back now, not
        # billed to whichever tool happens to run next: restore times varied 2.5-fold without.
        os.sync()
        t0 = time.monotonic()
        try:
            p = subprocess.Popen(full, stdout=subprocess.PIPE, stderr=lf, env=env, cwd=cwd,
                                 stdin=subprocess.DEVNULL)
        except OSError as e:
            lf.write(f"cannot start: {e}\n".encode())
            return {"rc": 127, "seconds": None, "maxrss_kib": None, "stdout": "", "ok": False,
                    "error": str(e)}
        out = p.stdout.read()
        _, status, ru = os.wait4(p.pid, 0)
        secs = time.monotonic() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        p.stdout.close()
        rss, how = ru.ru_maxrss, "wait4 (includes the harness's RSS at fork)"
        if use_time:
            try:
                with open(rss_file) as f:
                    rss, how = int(f.read().split()[-1]), "GNU time %M"
            except (OSError, ValueError, IndexError):
                pass
            try:
                os.unlink(rss_file)
            except OSError:
                pass
        rc = p.returncode
        if use_time and not os.path.exists(cmd[0]) and shutil.which(cmd[0]) is None:
            rc = 127
        lf.write(out)
        lf.write(f"[rc={rc} seconds={secs:.3f} maxrss_kib={rss}]\n".encode())
    return {"rc": rc, "seconds": round(secs, 3), "maxrss_kib": rss, "rss_from": how,
            "loadavg1_after": round(os.getloadavg()[0], 2),
            "stdout": out.decode(errors="replace"), "ok": rc == 0}


def tree_bytes(path):
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def allocated(path):
    return os.stat(path).st_blocks * 512


def same_file(a, b):
    if os.path.getsize(a) != os.path.getsize(b):
        return False
    return subprocess.run(["cmp", "--silent", a, b]).returncode == 0


def all_zero(path, size):
    if not os.path.isfile(path) or os.path.getsize(path) != size:
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        off = 0
        while off < size:
            try:
                d = os.lseek(fd, off, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:
                    return True
                raise
            h = os.lseek(fd, d, os.SEEK_HOLE)
            while d < h:
                b = os.pread(fd, min(8 * MIB, h - d), d)
                if not b or b.count(0) != len(b):
                    return False
                d += len(b)
            off = h
        return True
    finally:
        os.close(fd)


def link_as(src, dst):
    """Present src under the name dst (same name every night) without copying."""
    if os.path.lexists(dst):
        os.unlink(dst)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        run(["cp", "--sparse=always", "--reflink=auto", src, dst])


def find_file(root, name):
    for dirpath, _dirs, files in os.walk(root):
        if name in files:
            return os.path.join(dirpath, name)
    return None


def first_line(cmd):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        s = (r.stdout or r.stderr).strip().splitlines()
        return s[0] if s else None
    except Exception as e:  # noqa: BLE001
        return f"unavailable: {e}"


# --------------------------------------------------------------------------------------
# Tools
# --------------------------------------------------------------------------------------

class Tool:
    name = "?"
    exe = "?"

    def __init__(self, args):
        self.args = args

    def available(self):
        return shutil.which(self.exe) is not None

    def version(self):
        return first_line([self.exe, "--version"])

    def env(self, run_dir, repo):
        return dict(os.environ)


class Cairn(Tool):
    name = "cairn"

    def __init__(self, args, exe):
        super().__init__(args)
        self.exe = exe

    def available(self):
        return bool(self.exe) and os.access(self.exe, os.X_OK)

    def env(self, run_dir, repo):
        return dict(os.environ, CAIRN_REPO=repo)

    def init(self, repo):
        cmd = [self.exe, "init", "--repo", repo]
        if self.args.cairn_block_size:
            cmd += ["--block-size", self.args.cairn_block_size]
        return cmd

    def backup(self, repo, live_dir, name, label, group="vm1"):
        return [self.exe, "backup", "--repo", repo, "--group", group, "--json",
                os.path.join(live_dir, name)], None

    @staticmethod
    def parse_backup(stdout):
        for line in reversed(stdout.strip().splitlines()):
            line = line.strip()
            if line.startswith("{"):
                try:
                    return json.loads(line)
                except ValueError:
                    pass
        try:
            return json.loads(stdout)
        except ValueError:
            return None

    def snapshot_id(self, res, label, group="vm1"):
        j = self.parse_backup(res["stdout"])
        res["json"] = j
        if isinstance(j, dict) and j.get("id"):
            return j["id"]
        return f"{group}@latest"

    def restore(self, repo, snap, out_dir, name):
        out = os.path.join(out_dir, name)
        return [self.exe, "restore", "--repo", repo, snap, "--to", out], None, out

    def verify(self, repo):
        return [self.exe, "verify", "--repo", repo, "--json"]


class CairnEncrypted(Cairn):
    """The same Cairn on an `init --encryption` repository (issue 14: encrypted against
    unencrypted in one run), opened as a nightly timer opens it: with a host key
    (`key add --new-host-key`, $CAIRN_HOST_KEY), kept beside the repository, not in it. The
    passphrase (CAIRN_PASSWORD_FILE) makes the repository and the host key; with it alone each
    command would also pay scrypt's fixed 0.4 s (README, "Encryption")."""
    name = "cairn-enc"

    def env(self, run_dir, repo):
        secret = os.path.join(run_dir, "passphrase")
        if not os.path.exists(secret):
            with open(secret, "w") as f:
                f.write("bench-passphrase\n")
            os.chmod(secret, 0o600)
        return dict(os.environ, CAIRN_REPO=repo, CAIRN_PASSWORD_FILE=secret,
                    CAIRN_HOST_KEY=repo.rstrip("/") + ".hostkey")

    def init(self, repo):
        host_key = repo.rstrip("/") + ".hostkey"
        made = " ".join(shlex.quote(a) for a in super().init(repo) + ["--encryption"])
        added = " ".join(shlex.quote(a) for a in [self.exe, "key", "add", "--repo", repo, "--new-host-key", host_key])
        return ["sh", "-c", f"rm -f {shlex.quote(host_key)}; env -u CAIRN_HOST_KEY {made} && "
                f"env -u CAIRN_HOST_KEY {added} >/dev/null"]


class CairnS3(Cairn):
    """The same Cairn on an s3:// repository (issue 15): the radosgw that Tests/ceph/start-ceph.sh
    started, named by its env file's CAIRN_TEST_S3_* variables (source it first). Each round gets
    its own prefix in the bucket `cairn-bench` (made here with curl's SigV4 if missing); stored
    bytes are not measured (nothing is on the local disk)."""
    name = "cairn-s3"
    bucket = "cairn-bench"

    def __init__(self, args, exe):
        super().__init__(args, exe)
        self.endpoint = os.environ.get("CAIRN_TEST_S3_ENDPOINT")
        self.keys = (os.environ.get("CAIRN_TEST_S3_ACCESS_KEY", ""), os.environ.get("CAIRN_TEST_S3_SECRET_KEY", ""))
        self.token = hashlib.sha256(os.urandom(16)).hexdigest()[:8]
        self.made = False

    def available(self):
        return super().available() and bool(self.endpoint)

    def url(self, repo):
        run_dir = os.path.dirname(repo)  # .../roundN/cairn-s3: a new prefix for every round
        return f"s3://{self.bucket}/{self.token}-{os.path.basename(os.path.dirname(run_dir))}"

    def env(self, run_dir, repo):
        if not self.made:
            # radosgw wants the payload's SHA-256 signed (here of the empty body).
            empty = hashlib.sha256(b"").hexdigest()
            subprocess.run(["curl", "-s", "-X", "PUT", "--aws-sigv4", "aws:amz:us-east-1:s3", "--user",
                            f"{self.keys[0]}:{self.keys[1]}", "-H", f"x-amz-content-sha256: {empty}",
                            f"{self.endpoint}/{self.bucket}"], capture_output=True)
            self.made = True
        return dict(os.environ, CAIRN_REPO=self.url(repo), CAIRN_S3_ENDPOINT=self.endpoint,
                    AWS_ACCESS_KEY_ID=self.keys[0], AWS_SECRET_ACCESS_KEY=self.keys[1])

    def init(self, repo):
        return [self.exe, "init", "--repo", self.url(repo)]

    def curl(self, method, path, query=""):
        empty = hashlib.sha256(b"").hexdigest()
        url = f"{self.endpoint}/{self.bucket}{path}" + (f"?{query}" if query else "")
        return subprocess.run(["curl", "-s", "-X", method, "--aws-sigv4", "aws:amz:us-east-1:s3", "--user",
                               f"{self.keys[0]}:{self.keys[1]}", "-H", f"x-amz-content-sha256: {empty}", url],
                              capture_output=True, text=True).stdout

    def discard(self, repo):
        """Deletes the round's prefix, so that rounds do not fill the store (a one-OSD test
        cluster holds 4 GiB; a full OSD stalls every write, which the next rounds would time)."""
        prefix = self.url(repo).split("/", 3)[3] + "/"
        for _ in range(20):
            listing = self.curl("GET", "", f"list-type=2&prefix={urllib.parse.quote(prefix, safe='')}")
            keys = re.findall(r"<Key>([^<]+)</Key>", listing)
            if not keys:
                return
            for key in keys:
                self.curl("DELETE", "/" + urllib.parse.quote(html.unescape(key)))

    def backup(self, repo, live_dir, name, label, group="vm1"):
        return super().backup(self.url(repo), live_dir, name, label, group)

    def restore(self, repo, snap, out_dir, name):
        return super().restore(self.url(repo), snap, out_dir, name)

    def verify(self, repo):
        return super().verify(self.url(repo))


class Restic(Tool):
    name = "restic"
    exe = "restic"

    def __init__(self, args):
        super().__init__(args)
        self.sparse = False
        if self.available():
            h = subprocess.run(["restic", "restore", "--help"], capture_output=True, text=True)
            self.sparse = "--sparse" in h.stdout

    def version(self):
        return first_line(["restic", "version"])

    def env(self, run_dir, repo):
        return dict(os.environ, RESTIC_PASSWORD="bench", RESTIC_REPOSITORY=repo,
                    RESTIC_CACHE_DIR=os.path.join(run_dir, "restic-cache"))

    def init(self, repo):
        return ["restic", "init", "--repository-version", "2"]

    def backup(self, repo, live_dir, name, label, group="vm1"):
        return ["restic", "backup", "--host", "bench", "--tag", label, name], live_dir

    def snapshot_id(self, res, label, group="vm1"):
        m = re.search(r"snapshot ([0-9a-f]+) saved", res["stdout"])
        return m.group(1) if m else "latest"

    def restore(self, repo, snap, out_dir, name):
        cmd = ["restic", "restore", snap, "--target", out_dir]
        if self.sparse:
            cmd.append("--sparse")
        return cmd, None, None  # restic recreates the absolute path under the target

    def verify(self, repo):
        return ["restic", "check", "--read-data"]


class Borg(Tool):
    name = "borg"
    exe = "borg"
    create_opts = []

    def env(self, run_dir, repo):
        return dict(os.environ, BORG_PASSPHRASE="", BORG_REPO=repo,
                    BORG_BASE_DIR=os.path.join(run_dir, "borg-base"),
                    BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
                    BORG_RELOCATED_REPO_ACCESS_IS_OK="yes")

    def init(self, repo):
        return ["borg", "init", "-e", "none", repo]

    def backup(self, repo, live_dir, name, label, group="vm1"):
        return ["borg", "create"] + self.create_opts + [f"{repo}::{label}", name], live_dir

    def snapshot_id(self, res, label, group="vm1"):
        return label

    def restore(self, repo, snap, out_dir, name):
        return ["borg", "extract", "--sparse", f"{repo}::{snap}", name], out_dir, \
            os.path.join(out_dir, name)

    def verify(self, repo):
        return ["borg", "check", "--verify-data", repo]


class BorgFixed(Borg):
    name = "borg-fixed4M"
    create_opts = ["--chunker-params", "fixed,4194304", "--compression", "zstd,3"]


# --------------------------------------------------------------------------------------
# One tool, one round
# --------------------------------------------------------------------------------------

def step(res, key, r):
    res["steps"][key] = {k: v for k, v in r.items() if k != "stdout"}
    return r


def run_tool_round(tool, wl, run_dir, args):
    shutil.rmtree(run_dir, ignore_errors=True)
    os.makedirs(run_dir)
    repo = os.path.join(run_dir, "repo")
    live = os.path.join(run_dir, "live")
    logf = os.path.join(run_dir, "log.txt")
    env = tool.env(run_dir, repo)
    W = wl["dir"]
    res = {"tool": tool.name, "steps": {}, "stored": {}, "failures": []}

    def fail(what):
        res["failures"].append(what)
        log(f"  !!! {tool.name}: {what} (see {logf})")

    def do(key, cmd, cwd=None):
        r = step(res, key, timed(cmd, logf, env=env, cwd=cwd))
        if not r["ok"]:
            fail(f"{key} failed (rc={r['rc']})")
        else:
            log(f"  {tool.name:13s} {key:18s} {r['seconds']:8.2f} s  {r['maxrss_kib'] / 1024:7.0f} MiB")
        return r

    r = do("init", tool.init(repo))  # every tool creates the repository directory itself
    if not r["ok"]:
        return res

    name = "disk.raw"
    snaps = {}
    nights = [0, 1] + ([2] if args.night2 else [])
    for n in nights:
        src = os.path.join(W, "base.raw" if n == 0 else f"night{n}.raw")
        link_as(src, os.path.join(live, name))
        cmd, cwd = tool.backup(repo, live, name, f"night{n}")
        r = do(f"night{n}_backup", cmd, cwd)
        if r["ok"]:
            snaps[n] = tool.snapshot_id(r, f"night{n}")
            if tool.name == "cairn":
                res["steps"][f"night{n}_backup"]["json"] = r.get("json")
                if not isinstance(r.get("json"), dict):
                    fail(f"night{n}_backup printed no JSON object (using vm1@latest)")
        res["stored"][f"night{n}"] = tree_bytes(repo)
        if not r["ok"]:
            return res

    # restore the night-1 point to a fresh (sparse) file and compare
    out_dir = os.path.join(run_dir, "restore")
    os.makedirs(out_dir)
    cmd, cwd, out = tool.restore(repo, snaps[1], out_dir, name)
    r = do("restore", cmd, cwd)
    if r["ok"]:
        out = out or find_file(out_dir, name)
        src = os.path.join(W, "night1.raw")
        if not out or not os.path.exists(out):
            fail("restore produced no file")
            r["ok"] = res["steps"]["restore"]["ok"] = False
        else:
            ident = same_file(src, out)
            res["steps"]["restore"]["identical"] = ident
            res["steps"]["restore"]["allocated_bytes"] = allocated(out)
            if not ident:
                fail("RESTORED IMAGE DIFFERS FROM night1.raw")
                res["steps"]["restore"]["ok"] = False
    shutil.rmtree(out_dir, ignore_errors=True)

    do("verify", tool.verify(repo))

    extras = tool.name == "cairn" or args.peer_extras
    if extras:
        # 8 GiB all-zero disk: backup and sparse restore
        zname = "zero.raw"
        zlive = os.path.join(run_dir, "live-zero")
        link_as(os.path.join(W, zname), os.path.join(zlive, zname))
        before = tree_bytes(repo)
        cmd, cwd = tool.backup(repo, zlive, zname, "zero", group="zero")
        r = do("zero_backup", cmd, cwd)
        res["stored"]["zero_added"] = tree_bytes(repo) - before
        if r["ok"]:
            snap = tool.snapshot_id(r, "zero", group="zero")
            out_dir = os.path.join(run_dir, "restore-zero")
            os.makedirs(out_dir)
            cmd, cwd, out = tool.restore(repo, snap, out_dir, zname)
            r = do("zero_restore", cmd, cwd)
            if r["ok"]:
                out = out or find_file(out_dir, zname)
                ok = bool(out) and all_zero(out, wl["zero"]["bytes"])
                res["steps"]["zero_restore"]["identical"] = ok
                if out and os.path.exists(out):
                    res["steps"]["zero_restore"]["allocated_bytes"] = allocated(out)
                if not ok:
                    fail("RESTORED ZERO DISK IS NOT AN ALL-ZERO IMAGE OF THE RIGHT SIZE")
                    res["steps"]["zero_restore"]["ok"] = False
            shutil.rmtree(out_dir, ignore_errors=True)
        # 1 GiB incompressible disk: backup
        rname = "random.raw"
        rlive = os.path.join(run_dir, "live-random")
        link_as(os.path.join(W, rname), os.path.join(rlive, rname))
        before = tree_bytes(repo)
        cmd, cwd = tool.backup(repo, rlive, rname, "random", group="random")
        do("random_backup", cmd, cwd)
        res["stored"]["random_added"] = tree_bytes(repo) - before
    if tool.name == "cairn" and not args.no_qcow2:
        # guest view of qcow2: same data as base.raw, so it should add ~nothing
        qlive = os.path.join(run_dir, "live-qcow2")
        link_as(os.path.join(W, "base.qcow2"), os.path.join(qlive, "disk.qcow2"))
        before = tree_bytes(repo)
        cmd, cwd = tool.backup(repo, qlive, "disk.qcow2", "qcow2", group="vm1q")
        do("qcow2_backup", cmd, cwd)
        res["stored"]["qcow2_added"] = tree_bytes(repo) - before
        nbd_round(tool, wl, run_dir, repo, do)
    if tool.name == "cairn" and not args.no_qcow2 and not args.no_cbt:
        cbt_round(tool, wl, run_dir, repo, res, do, fail)
    return res


def nbd_round(tool, wl, run_dir, repo, do):
    """The same qcow2 read through qemu-nbd over a unix socket (issue 10: at least 0.8 times the
    speed of reading the file directly, the qcow2_backup step just before, which also finds
    every block already stored)."""
    sock = os.path.join(run_dir, "nbd.sock")
    server = subprocess.Popen(["qemu-nbd", "--read-only", "--persistent", "--shared=8", "-f", "qcow2",
                               "--socket", sock, os.path.join(wl["dir"], "base.qcow2")])
    try:
        for _ in range(500):
            if os.path.exists(sock):
                break
            time.sleep(0.01)
        cmd = [tool.exe, "backup", "--repo", repo, "--group", "vm1n", "--json",
               f"disk=nbd+unix:///?socket={sock}"]
        do("nbd_backup", cmd)
    finally:
        server.terminate()
        server.wait()


def cbt_round(tool, wl, run_dir, repo, res, do, fail):
    """The qcow2 workload row with changed-block tracking: a private copy of base.qcow2 backed
    up with --cbt (which starts a persistent dirty bitmap in it), night 1's guest writes applied
    through qemu-io (so QEMU records them in the bitmap), then night 1 with --cbt (reads only
    what the bitmap marks dirty), restored and compared with night1.raw."""
    W = wl["dir"]
    live = os.path.join(run_dir, "live-cbt")
    os.makedirs(live, exist_ok=True)
    disk = os.path.join(live, "disk.qcow2")
    run(["cp", "--sparse=always", os.path.join(W, "base.qcow2"), disk])
    cmd = [tool.exe, "backup", "--repo", repo, "--group", "vm1c", "--cbt", "--json", disk]
    r = do("cbt_night0_backup", cmd)
    if not r["ok"]:
        return
    # night 1's writes, byte for byte, from night1.raw
    with open(os.path.join(W, "night1-writes.json")) as f:
        writes = json.load(f)
    patches = os.path.join(run_dir, "cbt-patches")
    os.makedirs(patches, exist_ok=True)
    cmds = []
    with open(os.path.join(W, "night1.raw"), "rb") as night1:
        for i, w in enumerate(writes):
            path = os.path.join(patches, f"{i}.bin")
            with open(path, "wb") as out:
                out.write(os.pread(night1.fileno(), w["length"], w["offset"]))
            cmds += ["-c", f"write -q -s {path} {w['offset']} {w['length']}"]
    run(["qemu-io", "-f", "qcow2"] + cmds + [disk])
    shutil.rmtree(patches, ignore_errors=True)
    before = tree_bytes(repo)
    cmd = [tool.exe, "backup", "--repo", repo, "--group", "vm1c", "--cbt", "--json", disk]
    r = do("cbt_night1_backup", cmd)
    res["stored"]["cbt_night1_added"] = tree_bytes(repo) - before
    if not r["ok"]:
        return
    j = Cairn.parse_backup(r["stdout"])
    res["steps"]["cbt_night1_backup"]["json"] = j
    snap = j.get("id") if isinstance(j, dict) and j.get("id") else "vm1c@latest"
    out_dir = os.path.join(run_dir, "restore-cbt")
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, "disk.raw")
    r = do("cbt_restore", [tool.exe, "restore", "--repo", repo, snap, "--format", "raw", "--to", out])
    if r["ok"]:
        ident = same_file(os.path.join(W, "night1.raw"), out)
        res["steps"]["cbt_restore"]["identical"] = ident
        if not ident:
            fail("CBT NIGHT-1 RESTORE DIFFERS FROM night1.raw")
            res["steps"]["cbt_restore"]["ok"] = False
    shutil.rmtree(out_dir, ignore_errors=True)
    shutil.rmtree(live, ignore_errors=True)


# --------------------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------------------

METRICS = [
    # key, label, unit, how to get from a round result
    ("night0_s", "night-0 backup", "s"),
    ("night1_s", "night-1 backup", "s"),
    ("night2_s", "night-2 backup", "s"),
    ("restore_s", "restore night 1", "s"),
    ("verify_s", "verify all data", "s"),
    ("stored_night0", "stored after night 0", "B"),
    ("added_night1", "added by night 1", "B"),
    ("stored_night1", "stored after night 1", "B"),
    ("added_night2", "added by night 2", "B"),
    ("rss_night0", "peak RSS night-0", "KiB"),
    ("rss_night1", "peak RSS night-1", "KiB"),
    ("rss_restore", "peak RSS restore", "KiB"),
    ("rss_verify", "peak RSS verify", "KiB"),
    ("peak_rss", "peak RSS (max of steps)", "KiB"),
    ("zero_backup_s", "all-zero disk backup", "s"),
    ("zero_restore_s", "all-zero disk restore", "s"),
    ("random_backup_s", "incompressible backup", "s"),
    ("random_added", "incompressible stored", "B"),
    ("qcow2_backup_s", "qcow2 base backup", "s"),
    ("qcow2_added", "qcow2 base added", "B"),
    ("nbd_backup_s", "qcow2 via qemu-nbd backup", "s"),
    ("cbt_night0_s", "qcow2 --cbt night-0", "s"),
    ("cbt_night1_s", "qcow2 --cbt night-1", "s"),
    ("cbt_night1_read", "qcow2 --cbt night-1 read", "B"),
    ("cbt_night1_added", "qcow2 --cbt night-1 added", "B"),
]


def round_metrics(res):
    s, st = res["steps"], res["stored"]
    m = {}

    def secs(step, key):
        if s.get(step, {}).get("ok"):
            m[key] = s[step]["seconds"]

    def rss(step, key):
        if s.get(step, {}).get("ok"):
            m[key] = s[step]["maxrss_kib"]

    secs("night0_backup", "night0_s")
    secs("night1_backup", "night1_s")
    secs("night2_backup", "night2_s")
    secs("restore", "restore_s")
    secs("verify", "verify_s")
    secs("zero_backup", "zero_backup_s")
    secs("zero_restore", "zero_restore_s")
    secs("random_backup", "random_backup_s")
    secs("qcow2_backup", "qcow2_backup_s")
    secs("nbd_backup", "nbd_backup_s")
    secs("cbt_night0_backup", "cbt_night0_s")
    secs("cbt_night1_backup", "cbt_night1_s")
    if s.get("cbt_night1_backup", {}).get("ok"):
        m["cbt_night1_added"] = st.get("cbt_night1_added")
        read = bytes_read(s["cbt_night1_backup"].get("json"))
        if read is not None:
            m["cbt_night1_read"] = read
    rss("night0_backup", "rss_night0")
    rss("night1_backup", "rss_night1")
    rss("restore", "rss_restore")
    rss("verify", "rss_verify")
    main = [m[k] for k in ("rss_night0", "rss_night1", "rss_restore", "rss_verify") if k in m]
    if main:
        m["peak_rss"] = max(main)
    if s.get("night0_backup", {}).get("ok"):
        m["stored_night0"] = st["night0"]
    if s.get("night1_backup", {}).get("ok"):
        m["stored_night1"] = st["night1"]
        m["added_night1"] = st["night1"] - st["night0"]
    if s.get("night2_backup", {}).get("ok"):
        m["added_night2"] = st["night2"] - st["night1"]
    if s.get("random_backup", {}).get("ok"):
        m["random_added"] = st["random_added"]
    if s.get("qcow2_backup", {}).get("ok"):
        m["qcow2_added"] = st["qcow2_added"]
    return m


def bytes_read(j):
    """Bytes a Cairn backup read from its disks, from its --json summary."""
    if not isinstance(j, dict):
        return None
    disks = j.get("disks")
    if isinstance(disks, list) and disks and all(isinstance(d, dict) and "bytesRead" in d for d in disks):
        return sum(d["bytesRead"] for d in disks)
    return j.get("bytesRead")


def medians(rounds, tools, fn=statistics.median):
    out = {}
    for t in tools:
        per = [r["metrics"] for r in rounds if r["tool"] == t]
        mt = {}
        for key, _label, _unit in METRICS:
            vals = [p[key] for p in per if key in p]
            if vals:
                mt[key] = fn(vals)
        out[t] = mt
    return out


GOALS = [
    # label, cairn metric, peer(s), peer metric, factor (cairn <= factor * peer)
    ("night-0 backup", "night0_s", ["borg-fixed4M"], "night0_s", 0.4),
    ("night-1 backup", "night1_s", ["borg-fixed4M"], "night1_s", 0.25),
    ("restore", "restore_s", ["restic"], "restore_s", 0.35),
    ("verify all data", "verify_s", ["restic"], "verify_s", 0.35),
    ("bytes added by night 1", "added_night1", ["restic"], "added_night1", 0.25),
    ("stored after night 0", "stored_night0", ["restic", "borg", "borg-fixed4M"],
     "stored_night0", 1.05),
    ("peak RSS", "peak_rss", ["borg"], "peak_rss", 1.0),
    ("qcow2 --cbt night-1 (issue 10)", "cbt_night1_s", ["borg-fixed4M"], "night1_s", 0.05),
]


def check_goals(med):
    c = med.get("cairn", {})
    out = []
    for label, ck, peers, pk, factor in GOALS:
        pv = [(p, med.get(p, {}).get(pk)) for p in peers]
        pv = [(p, v) for p, v in pv if v is not None]
        g = {"goal": label, "metric": ck, "factor": factor, "against": peers}
        if ck in c and pv:
            peer, ref = min(pv, key=lambda x: x[1])
            g.update(cairn=c[ck], peer=peer, peer_value=ref, limit=factor * ref,
                     ratio=(c[ck] / ref) if ref else None,
                     result="PASS" if c[ck] <= factor * ref else "FAIL")
        else:
            g["result"] = "n/a"
        out.append(g)
    # Issue 10: reading the qcow2 through qemu-nbd at least 0.8 times as fast as the file itself.
    nb, qb = c.get("nbd_backup_s"), c.get("qcow2_backup_s")
    g = {"goal": "qcow2 through qemu-nbd (speed >= 0.8x the file read)",
         "metric": "nbd_backup_s", "factor": 1 / 0.8, "against": ["cairn qcow2_backup_s"]}
    if nb is not None and qb:
        g.update(cairn=nb, peer="cairn-file", peer_value=qb, limit=qb / 0.8, ratio=nb / qb,
                 result="PASS" if nb <= qb / 0.8 else "FAIL")
    else:
        g["result"] = "n/a"
    out.append(g)
    # Issue 14: the encrypted repository against the plain one, same binary, same run.
    e = med.get("cairn-enc", {})
    for metric, factor in (("night0_s", 1.05), ("night1_s", 1.05), ("restore_s", 1.10), ("verify_s", 1.10)):
        g = {"goal": f"encrypted {metric[:-2]} (at most {factor}x unencrypted)", "metric": metric,
             "factor": factor, "against": ["cairn"]}
        if e.get(metric) is not None and c.get(metric):
            g.update(cairn=e[metric], peer="cairn", peer_value=c[metric], limit=factor * c[metric],
                     ratio=e[metric] / c[metric], result="PASS" if e[metric] <= factor * c[metric] else "FAIL")
        else:
            g["result"] = "n/a"
        out.append(g)
    # Issue 15: an s3:// repository on radosgw over loopback against the local one.
    o = med.get("cairn-s3", {})
    for metric, speed in (("night0_s", 0.7), ("night1_s", 0.8), ("restore_s", 0.7)):
        g = {"goal": f"s3 {metric[:-2]} (speed at least {speed}x the local repository's)", "metric": metric,
             "factor": round(1 / speed, 3), "against": ["cairn"]}
        if o.get(metric) is not None and c.get(metric):
            g.update(cairn=o[metric], peer="cairn", peer_value=c[metric], limit=c[metric] / speed,
                     ratio=o[metric] / c[metric], result="PASS" if o[metric] <= c[metric] / speed else "FAIL")
        else:
            g["result"] = "n/a"
        out.append(g)
    zb, zr = c.get("zero_backup_s"), c.get("zero_restore_s")
    g = {"goal": "8 GiB all-zero disk (backup and sparse restore each < 0.1 s)",
         "metric": "zero_backup_s,zero_restore_s", "limit": 0.1}
    if zb is not None and zr is not None:
        g.update(cairn=[zb, zr], result="PASS" if zb < 0.1 and zr < 0.1 else "FAIL")
    else:
        g["result"] = "n/a"
    out.append(g)
    return out


def ratios(med):
    c = med.get("cairn", {})
    out = {}
    for peer, mt in med.items():
        if peer == "cairn":
            continue
        out[peer] = {k: round(c[k] / v, 4) for k, v in mt.items() if k in c and v}
    return out


def fmt(v, unit):
    if v is None:
        return "-"
    if unit == "s":
        return f"{v:.3f}" if v < 1 else f"{v:.2f}"
    if unit == "B":
        return f"{v / MIB:.1f}M"
    if unit == "KiB":
        return f"{v / 1024:.0f}M"
    return str(v)


def print_table(med, rat, goals, tools):
    peers = [t for t in tools if t != "cairn"]
    cols = tools + ([f"cairn/{p}" for p in peers] if "cairn" in tools else [])
    w0 = 28
    ws = [max(10, len(c) + 2) for c in cols]
    print()
    print("Medians over rounds (s = wall seconds, M = MiB; bytes are repository bytes)")
    print(f"{'step':{w0}s}" + "".join(f"{c:>{w}s}" for c, w in zip(cols, ws)))
    for key, label, unit in METRICS:
        if not any(key in med.get(t, {}) for t in tools):
            continue
        row = f"{label:{w0}s}"
        cells = [fmt(med.get(t, {}).get(key), unit) for t in tools]
        if "cairn" in tools:
            for p in peers:
                v = rat.get(p, {}).get(key)
                cells.append(f"{v:.3f}" if v is not None else "-")
        row += "".join(f"{c:>{w}s}" for c, w in zip(cells, ws))
        print(row)
    print()
    print("Goals (Cairn vs peer medians)")
    for g in goals:
        if g["result"] == "n/a":
            print(f"  n/a   {g['goal']}: not measured on both sides")
        elif "peer" in g:
            unit = {k: u for k, _l, u in METRICS}[g["metric"]]
            print(f"  {g['result']:5s} {g['goal']}: cairn {fmt(g['cairn'], unit)} <= "
                  f"{g['factor']} x {g['peer']} {fmt(g['peer_value'], unit)}? "
                  f"(ratio {g['ratio']:.3f})")
        else:
            print(f"  {g['result']:5s} {g['goal']}: backup {g['cairn'][0]:.3f} s, "
                  f"restore {g['cairn'][1]:.3f} s")


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------

def machine_info(work):
    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    fstype = first_line(["stat", "-f", "-c", "%T", work])
    return {"nproc": len(os.sched_getaffinity(0)), "cpu_count": os.cpu_count(),
            "cpu_model": cpu, "mem_bytes": mem, "kernel": platform.release(),
            "python": platform.python_version(), "work_fs": fstype,
            "loadavg_at_start": os.getloadavg(),
            "page_cache": "not dropped (no root on CI): source images are page-cached"}


def resolve_cairn(args):
    if args.cairn:
        return os.path.abspath(args.cairn)
    if os.environ.get("CAIRN_BIN"):
        return os.path.abspath(os.environ["CAIRN_BIN"])
    if args.no_build:
        return os.path.join(REPO_ROOT, ".build", "release", "cairn")
    log("cairn: swift build -c release (in " + REPO_ROOT + ")")
    r = subprocess.run(["swift", "build", "-c", "release"], cwd=REPO_ROOT)
    if r.returncode != 0:
        log("!!! cairn: release build failed; Cairn will be skipped")
        return None
    return os.path.join(REPO_ROOT, ".build", "release", "cairn")


# --------------------------------------------------------------------------------------
# The machine's limits (issue 19)
# --------------------------------------------------------------------------------------

def resolve_limits(args):
    if args.limits_bin:
        return os.path.abspath(args.limits_bin)
    micro = os.path.join(HERE, "Micro")
    log("cairn-limits: swift build -c release --package-path Benchmarks/Micro --product cairn-limits")
    r = subprocess.run(["swift", "build", "-c", "release", "--package-path", micro,
                        "--product", "cairn-limits"], cwd=REPO_ROOT)
    if r.returncode != 0:
        log("!!! cairn-limits: build failed; limits are not measured")
        return None
    return os.path.join(micro, ".build", "release", "cairn-limits")


def measure_limits(exe, wl, work):
    """One measurement of the machine's rates on the workload's own data (base.raw)."""
    scratch = os.path.join(work, "limits-scratch")
    os.makedirs(scratch, exist_ok=True)
    r = subprocess.run([exe, os.path.join(wl["dir"], "base.raw"), "--scratch", scratch],
                       capture_output=True, text=True)
    if r.returncode != 0:
        log(f"!!! cairn-limits failed: {r.stderr.strip()}")
        return None
    lim = json.loads(r.stdout)
    lim["loadavg1_after"] = os.getloadavg()[0]
    a = lim["all_cores"]
    log(f"  limits: sha256 {a['sha256'] / 1e6:.0f} MB/s, zstd {a['compress'] / 1e6:.0f} MB/s, "
        f"unzstd {a['decompress'] / 1e6:.0f} MB/s, aes-256-gcm {a.get('aes256gcm', 0) / 1e6:.0f} MB/s "
        f"({lim['per_core'].get('aes256gcm', 0) / 1e6:.0f} a core) on {lim['cores']} cores; page cache read "
        f"{lim['page_cache_read'] / 1e6:.0f}, write {lim['page_cache_write'] / 1e6:.0f} MB/s")
    return lim


def step_limits(lim, c):
    """Seconds each Cairn step could take at best on this machine, from one limits measurement
    and the bytes of Cairn's own run (its --json summary and the workload facts).

    Every byte of data costs its hash and, when new, its compression; restore and verify cost a
    decompression and a hash of every byte (verify also a CRC-32 of every stored byte), restore
    a page-cache write. CPU work is spread over every core (the all-core rates), so the CPU
    limit is the sum of each stage's bytes over its all-core rate; reading the source from the
    page cache is overlapped with it, so a step's limit is the larger of the two."""
    a = lim["all_cores"]
    ratio = lim["compress_ratio"]
    out = {}

    def add(key, cpu, read=0.0):
        out[key] = max(cpu, read)

    n0 = c.get("night0")
    if n0:
        data, new = n0["bytesRead"], n0["bytesNew"]
        add("night0_s", data / a["sha256"] + new / a["compress"], data / lim["page_cache_read"])
    n1 = c.get("night1")
    if n1:
        data, new = n1["bytesRead"], n1["bytesNew"]
        add("night1_s", data / a["sha256"] + new / a["compress"], data / lim["page_cache_read"])
    data = n1["bytesRead"] if n1 else None
    if data:
        add("restore_s", data / a["decompress"] + data / a["sha256"] + data / (lim["page_cache_write"]))
    if n0 and n1:
        unique = n0["bytesNew"] + n1["bytesNew"]
        add("verify_s", unique / a["decompress"] + unique / a["sha256"] + unique * ratio / a["crc32"])
    cb = c.get("cbt_night1")
    if cb:
        data, new = cb["bytesRead"], cb["bytesNew"]
        add("cbt_night1_s", data / a["sha256"] + new / a["compress"], data / lim["page_cache_read"])
    return out


def summarize_limits(limit_rounds, rounds, wl):
    """Per Cairn round: each step's time over the limit measured in the same round; then min,
    median and max over the rounds."""
    by_round = {l["round"]: l for l in limit_rounds}
    per_step = {}
    for r in rounds:
        if r["tool"] != "cairn" or r["round"] not in by_round:
            continue
        s = r["steps"]
        c = {}
        for key, step_name in (("night0", "night0_backup"), ("night1", "night1_backup"),
                               ("cbt_night1", "cbt_night1_backup")):
            j = s.get(step_name, {}).get("json")
            if s.get(step_name, {}).get("ok") and isinstance(j, dict) and "bytesRead" in j:
                c[key] = j
        lims = step_limits(by_round[r["round"]], c)
        for key, limit in lims.items():
            t = r["metrics"].get(key)
            if t is not None and limit > 0:
                per_step.setdefault(key, []).append({"round": r["round"], "seconds": t,
                                                     "limit_s": limit, "ratio": t / limit})
    rates = {}
    for field in ("sha256", "compress", "decompress", "crc32"):
        for scope in ("per_core", "all_cores"):
            vals = [l[scope][field] for l in limit_rounds]
            rates[f"{scope}.{field}"] = {"min": min(vals), "median": statistics.median(vals),
                                         "max": max(vals)}
    for field in ("page_cache_read", "page_cache_write", "compress_ratio"):
        vals = [l[field] for l in limit_rounds]
        rates[field] = {"min": min(vals), "median": statistics.median(vals), "max": max(vals)}
    steps = {}
    for key, vals in per_step.items():
        ratios_ = [v["ratio"] for v in vals]
        times = [v["seconds"] for v in vals]
        steps[key] = {"rounds": vals,
                      "seconds": {"min": min(times), "median": statistics.median(times),
                                  "max": max(times)},
                      "limit_s_median": statistics.median(v["limit_s"] for v in vals),
                      "ratio": {"min": min(ratios_), "median": statistics.median(ratios_),
                                "max": max(ratios_)}}
    return {"model": step_limits.__doc__.strip(), "rates": rates, "steps": steps,
            "measurements": limit_rounds}


LIMIT_GOALS = {"night0_s": 1.10, "restore_s": 1.2}


def print_limits(limits, machine):
    print()
    print(f"The machine's limits on the workload's data ({machine.get('cpu_model')}, "
          f"{machine.get('nproc')} cores; min / median / max over rounds)")
    labels = {"per_core.sha256": "SHA-256, one core", "all_cores.sha256": "SHA-256, all cores",
              "per_core.compress": "zstd (Cairn's setup), one core",
              "all_cores.compress": "zstd (Cairn's setup), all cores",
              "per_core.decompress": "zstd decompress, one core",
              "all_cores.decompress": "zstd decompress, all cores",
              "per_core.crc32": "CRC-32, one core", "all_cores.crc32": "CRC-32, all cores",
              "page_cache_read": "page-cache read", "page_cache_write": "page-cache write"}
    for key, label in labels.items():
        v = limits["rates"][key]
        print(f"  {label:34s} {v['min'] / 1e6:8.0f} {v['median'] / 1e6:8.0f} {v['max'] / 1e6:8.0f} MB/s")
    v = limits["rates"]["compress_ratio"]
    print(f"  {'compressed / plain':34s} {v['min']:8.3f} {v['median']:8.3f} {v['max']:8.3f}")
    print()
    print(f"{'Cairn step':24s}{'min s':>9s}{'median s':>10s}{'max s':>9s}{'limit s':>10s}"
          f"{'ratio to limit (min/median/max)':>34s}")
    names = {"night0_s": "night-0 backup", "night1_s": "night-1 backup", "restore_s": "restore night 1",
             "verify_s": "verify all data", "cbt_night1_s": "qcow2 --cbt night-1"}
    for key, label in names.items():
        st = limits["steps"].get(key)
        if not st:
            continue
        t, r = st["seconds"], st["ratio"]
        goal = LIMIT_GOALS.get(key)
        verdict = "" if goal is None else (f"  goal <= {goal}: " + ("PASS" if r["median"] <= goal else "FAIL"))
        print(f"{label:24s}{t['min']:9.3f}{t['median']:10.3f}{t['max']:9.3f}{st['limit_s_median']:10.3f}"
              f"{r['min']:12.2f}{r['median']:10.2f}{r['max']:10.2f}{verdict}")


def main():
    ap = argparse.ArgumentParser(description="Cairn vs restic vs borg benchmark (issue 6)")
    ap.add_argument("--work", default=os.environ.get("CAIRN_BENCH_WORK",
                                                     os.path.join(HERE, "work")),
                    help="work directory (env CAIRN_BENCH_WORK; default Benchmarks/work)")
    ap.add_argument("--results", default=os.environ.get(
        "CAIRN_BENCH_RESULTS", os.path.join(HERE, "results", "latest.json")))
    ap.add_argument("--scale", type=float,
                    default=float(os.environ.get("CAIRN_BENCH_SCALE", "1")),
                    help="multiply every disk size (env CAIRN_BENCH_SCALE)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: --scale 0.0625 --rounds 1")
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("CAIRN_BENCH_ROUNDS", "5")))
    ap.add_argument("--tools", default=",".join(ALL_TOOLS),
                    help="comma list of " + ",".join(ALL_TOOLS))
    ap.add_argument("--cairn", help="cairn binary (env CAIRN_BIN; default: swift build -c "
                    "release in the repo root, then .build/release/cairn)")
    ap.add_argument("--no-build", action="store_true",
                    help="do not build Cairn; use .build/release/cairn as is")
    ap.add_argument("--cairn-block-size", help="pass --block-size to cairn init")
    ap.add_argument("--fill", type=float, default=0.60, help="ext4 fill fraction")
    ap.add_argument("--night-pct", type=float, default=1.0,
                    help="percent of the disk rewritten per night")
    ap.add_argument("--seed", type=int, default=6)
    ap.add_argument("--night2", action="store_true", help="also back up night 2")
    ap.add_argument("--peer-extras", action="store_true",
                    help="also run the all-zero and incompressible disks for restic/borg")
    ap.add_argument("--no-qcow2", action="store_true", help="skip Cairn's qcow2 backup")
    ap.add_argument("--no-cbt", action="store_true",
                    help="skip Cairn's qcow2 --cbt nights")
    ap.add_argument("--no-limits", action="store_true",
                    help="do not measure the machine's limits (cairn-limits)")
    ap.add_argument("--limits-bin", default=os.environ.get("CAIRN_LIMITS_BIN"),
                    help="cairn-limits binary (env CAIRN_LIMITS_BIN; default: swift build -c release "
                    "--package-path Benchmarks/Micro --product cairn-limits)")
    ap.add_argument("--keep", action="store_true", help="keep repositories after each run")
    ap.add_argument("--workload-only", action="store_true")
    args = ap.parse_args()
    if args.quick:
        if "CAIRN_BENCH_SCALE" not in os.environ and args.scale == 1:
            args.scale = 0.0625
        args.rounds = 1

    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    for need in ("sgdisk", "mkfs.ext4", "dumpe2fs", "qemu-img", "openssl", "cmp", "dd"):
        if not shutil.which(need):
            sys.exit(f"missing {need}: apt-get install gdisk e2fsprogs qemu-utils openssl "
                     "diffutils coreutils")
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    wl = build_workload(args, work)
    if args.workload_only:
        print(json.dumps(wl, indent=2))
        return 0

    wanted = [t.strip() for t in args.tools.split(",") if t.strip()]
    for t in wanted:
        if t not in ALL_TOOLS:
            sys.exit(f"unknown tool {t}; choose from {', '.join(ALL_TOOLS)}")
    tools = {}
    cairn_sha = None
    if "cairn" in wanted:
        exe = resolve_cairn(args)
        if exe and os.access(exe, os.X_OK):
            # run a private copy, so a rebuild of the binary during the run changes nothing
            snap = os.path.join(work, "bin", "cairn")
            os.makedirs(os.path.dirname(snap), exist_ok=True)
            shutil.copy2(exe, snap + ".tmp")
            os.replace(snap + ".tmp", snap)
            with open(snap, "rb") as f:
                cairn_sha = hashlib.sha256(f.read()).hexdigest()
            log(f"cairn: {exe} (sha256 {cairn_sha[:16]}...)")
            exe = snap
        tools["cairn"] = Cairn(args, exe)
        if "cairn-enc" in wanted:
            tools["cairn-enc"] = CairnEncrypted(args, exe)
        if "cairn-s3" in wanted:
            tools["cairn-s3"] = CairnS3(args, exe)
    if "restic" in wanted:
        tools["restic"] = Restic(args)
    if "borg" in wanted:
        tools["borg"] = Borg(args)
    if "borg-fixed4M" in wanted:
        tools["borg-fixed4M"] = BorgFixed(args)
    versions = {}
    for n, t in list(tools.items()):
        if t.available():
            versions[n] = t.version()
        else:
            log(f"!!! {n}: not installed/found ({t.exe}); skipped")
            versions[n] = None
            del tools[n]
    order = list(tools)
    versions["cairn_sha256"] = cairn_sha
    versions["qemu-img"] = first_line(["qemu-img", "--version"])
    versions["mkfs.ext4"] = first_line(["mkfs.ext4", "-V"])

    limits_exe = None if args.no_limits else resolve_limits(args)
    limit_rounds = []
    rounds = []
    for rnd in range(1, args.rounds + 1):
        k = (rnd - 1) % max(1, len(order))
        this = order[k:] + order[:k]  # rotate the start so no tool always runs first
        log(f"== round {rnd}/{args.rounds}: {', '.join(this)}")
        if limits_exe:
            lim = measure_limits(limits_exe, wl, work)
            if lim:
                lim["round"] = rnd
                limit_rounds.append(lim)
        for name in this:
            run_dir = os.path.join(work, "runs", f"round{rnd}", name)
            try:
                res = run_tool_round(tools[name], wl, run_dir, args)
            except Exception as e:  # noqa: BLE001 - record and carry on with the next tool
                log(f"  !!! {name}: harness error: {e!r}")
                res = {"tool": name, "steps": {}, "stored": {},
                       "failures": [f"harness error: {e!r}"]}
            res["round"] = rnd
            res["metrics"] = round_metrics(res)
            rounds.append(res)
            if not args.keep:
                for sub in ("repo", "restic-cache", "borg-base"):
                    shutil.rmtree(os.path.join(run_dir, sub), ignore_errors=True)
                if hasattr(tools[name], "discard"):
                    tools[name].discard(os.path.join(run_dir, "repo"))

    med = medians(rounds, order)
    rat = ratios(med)
    goals = check_goals(med)
    print_table(med, rat, goals, order)
    limits = summarize_limits(limit_rounds, rounds, wl) if limit_rounds and "cairn" in order else None
    if limits:
        print_limits(limits, machine_info(work))
    failures = [(r["round"], r["tool"], f) for r in rounds for f in r["failures"]]
    result = {
        "started": started,
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": sys.argv,
        "rounds_requested": args.rounds,
        "machine": machine_info(work),
        "versions": versions,
        "workload": wl,
        "tool_options": {
            "restic": "init --repository-version 2; backup <path> (compression auto); restore"
                      + (" --sparse" if "restic" in tools and tools["restic"].sparse else
                         " (no --sparse in this version)") + "; check --read-data",
            "borg": "init -e none; create (default buzhash chunker, lz4); extract --sparse; "
                    "check --verify-data",
            "borg-fixed4M": "init -e none; create --chunker-params fixed,4194304 "
                            "--compression zstd,3; extract --sparse; check --verify-data",
            "cairn": "init; backup --group vm1 --json; restore ID --to FILE; verify --json",
        },
        "rounds": rounds,
        "medians": med,
        "minimums": medians(rounds, order, min),
        "ratios_cairn_over_peer": rat,
        "limits": limits,
        "goals": goals,
        "failures": failures,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.results)), exist_ok=True)
    with open(args.results, "w") as f:
        json.dump(result, f, indent=2)
    print(f"\nresults: {args.results}")
    if failures:
        print("\n!!! FAILURES:")
        for r, t, f in failures:
            print(f"!!!   round {r} {t}: {f}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
