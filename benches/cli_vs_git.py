#!/usr/bin/env python3
"""Whole-CLI offline `snaproll reconcile --repo` of N datasets against `git add -A && git commit`
of the same files already on disk, side by side in one run (interleaved, medians): the first
commit into a new repository, one dataset changed (git's side twice: only the changed file
rewritten, the strict baseline; every file rewritten, as a generator rendering the folder
leaves it), and a no-op. Checks that every side commits the same tree, and prints a PASS/MISS
line per target of issue 15 (first <= 1x git, one changed <= 2x, no-op < 1x; wall time).

usage: benches/cli_vs_git.py SNAPROLL_BINARY [DATASETS] [RUNS]
"""
import os, shutil, statistics, subprocess, sys, tempfile, time

BIN = sys.argv[1]
N = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
RUNS = int(sys.argv[3]) if len(sys.argv) > 3 else 5


def spec(n, replicas0=3):
    s = ("apiVersion: snaproll.dev/v1alpha1\nkind: DatasetRollout\nmetadata:\n  name: bench\n"
         "  namespace: bench\nspec:\n  snapshotClass:\n    name: bench-class\n"
         "    driver: pd.csi.storage.gke.io\n  datasets:\n")
    for i in range(n):
        r = replicas0 if i == 0 else 3
        s += (f"    - name: data-{i}\n      storage: {{storageClassName: standard-rwo, size: 10Gi}}\n"
              f"      producer:\n        image: ubuntu:22.04\n        command: [\"/bin/sh\", \"-c\"]\n"
              f"        args: [\"echo {i} > /data/file.txt\"]\n      consumer:\n        name: consumer-{i}\n"
              f"        replicas: {r}\n        image: ubuntu:22.04\n")
    return s


def run(cmd, cwd=None, env=None, ok=(0,)):
    """(wall ms, cpu ms, max rss MiB) of one process (a shell for git)."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         shell=isinstance(cmd, str))
    _, status, ru = os.wait4(p.pid, 0)
    wall = (time.perf_counter() - t) * 1000
    err = p.stderr.read().decode()
    code = os.waitstatus_to_exitcode(status)
    if code not in ok:
        sys.exit(f"{cmd} exited {code}: {err}")
    return wall, (ru.ru_utime + ru.ru_stime) * 1000, ru.ru_maxrss / 1024


def main():
    tmp = tempfile.mkdtemp(prefix="cli-vs-git-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    home = os.path.join(tmp, "home")
    os.makedirs(home)
    env = dict(os.environ, HOME=home, GIT_CONFIG_NOSYSTEM="1", GIT_AUTHOR_NAME="bench",
               GIT_AUTHOR_EMAIL="bench@example.com", GIT_COMMITTER_NAME="bench",
               GIT_COMMITTER_EMAIL="bench@example.com",
               # No background auto-gc (from about 6,700 loose objects, i.e. 10,000 datasets):
               # it would race the copies below, and it is not part of git's commit anyway.
               GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="gc.auto", GIT_CONFIG_VALUE_0="0")
    env.pop("RUST_LOG", None)
    s1, s2 = os.path.join(tmp, "spec.yaml"), os.path.join(tmp, "spec2.yaml")
    open(s1, "w").write(spec(N))
    open(s2, "w").write(spec(N, 4))
    folder = "rollouts/bench"

    def snaproll(repo, sp):
        return run([BIN, "reconcile", "-f", sp, "--repo", repo, "--offline", "--generation",
                    "2021-07-15", "--author-name", "bench", "--author-email", "bench@example.com"],
                   env=env)

    def git(repo, ok=(0,)):
        return run("git add -A && git commit -q -m bench", cwd=repo, env=env, ok=ok)

    res = {k: [] for k in ["sf", "gf", "sd", "gd", "ga", "sn", "gn"]}
    for r in range(RUNS):
        rs, rg = os.path.join(tmp, f"s{r}"), os.path.join(tmp, f"g{r}")
        # git's files are on disk before its clock starts: the first run writes them.
        order = [0, 1] if r % 2 == 0 else [1, 0]
        def first(side):
            if side == 0:
                res["sf"].append(snaproll(rs, s1))
            else:
                res["gf"].append(git(rg))
        # prepare git's repository from a throwaway snaproll render
        prep = os.path.join(tmp, f"p{r}")
        snaproll(prep, s1)
        os.makedirs(rg)
        subprocess.run(["git", "init", "-q", "-b", "main", rg], check=True, env=env)
        shutil.copytree(os.path.join(prep, folder), os.path.join(rg, folder))
        for side in order:
            first(side)
        # one dataset changed, git's side written before its clock starts: strictly (gd), only
        # the changed file is rewritten; as a generator rendering the folder does (ga), every
        # file is rewritten, and git re-reads them all.
        ra = os.path.join(tmp, f"a{r}")
        shutil.copytree(rg, ra)
        snaproll(prep, s2)
        src = os.path.join(prep, folder)
        for name in os.listdir(src):
            new = open(os.path.join(src, name), "rb").read()
            path = os.path.join(rg, folder, name)
            if not os.path.exists(path) or open(path, "rb").read() != new:
                open(path, "wb").write(new)
        for name in os.listdir(os.path.join(rg, folder)):
            if not os.path.exists(os.path.join(src, name)):
                os.remove(os.path.join(rg, folder, name))
        shutil.rmtree(os.path.join(ra, folder))
        shutil.copytree(src, os.path.join(ra, folder))
        for side in order:
            if side == 0:
                res["sd"].append(snaproll(rs, s2))
            else:
                res["gd"].append(git(rg))
                res["ga"].append(git(ra))
        for side in order:
            if side == 0:
                res["sn"].append(snaproll(rs, s2))
            else:
                res["gn"].append(git(rg, ok=(0, 1)))
        ts = subprocess.run(["git", "-C", rs, "rev-parse", f"HEAD:{folder}"], capture_output=True, text=True, env=env).stdout
        tg = subprocess.run(["git", "-C", rg, "rev-parse", f"HEAD:{folder}"], capture_output=True, text=True, env=env).stdout
        assert ts == tg and ts, f"trees differ: {ts} {tg}"
        n_commits = subprocess.run(["git", "-C", rs, "rev-list", "--count", "HEAD"], capture_output=True, text=True).stdout.strip()
        assert n_commits == "2", f"snaproll made {n_commits} commits"
        ta = subprocess.run(["git", "-C", ra, "rev-parse", f"HEAD:{folder}"], capture_output=True, text=True, env=env).stdout
        assert ta == ts, f"trees differ: {ta} {ts}"
        for d in (rs, rg, ra, prep):
            shutil.rmtree(d)
    med = lambda k, i: statistics.median(x[i] for x in res[k])
    print(f"{N} datasets, medians of {RUNS} interleaved runs (ms; same tree on both sides)")
    print("| run | snaproll | git | ratio (wall) | ratio (cpu) |")
    print("|---|---|---|---|---|")
    rows = [("first", "sf", "gf", 1.0, "<="), ("one changed (git: that file rewritten)", "sd", "gd", 2.0, "<="),
            ("one changed (git: every file rewritten)", "sd", "ga", 2.0, "<="), ("no-op", "sn", "gn", 1.0, "<")]
    verdicts = []
    for name, s, g, target, op in rows:
        wall, cpu = med(s, 0) / med(g, 0), med(s, 1) / med(g, 1)
        print(f"| {name} | {med(s,0):,.0f} ms, {med(s,2):.0f} MiB | {med(g,0):,.0f} ms | "
              f"{wall:.2f}x | {cpu:.2f}x |")
        ok = wall <= target if op == "<=" else wall < target
        verdicts.append(f"{'PASS' if ok else 'MISS'}: {name}: {wall:.2f}x git (wall; cpu {cpu:.2f}x), target {op} {target:.1f}x")
    print()
    print("\n".join(verdicts))
    shutil.rmtree(tmp)


main()
