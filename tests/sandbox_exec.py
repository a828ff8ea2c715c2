"""Run a command under a seccomp allow list, as systemd's ``SystemCallFilter=`` does (a test helper).

``python sandbox_exec.py --errno N --allow read,write,... [--mdwe] -- COMMAND...``: every system call
not in the list fails with errno N; ``--mdwe`` also refuses writable-executable memory, as
``MemoryDenyWriteExecute=`` does. The filter is loaded with libseccomp (systemd's own library) and
kept across ``exec``. Exits 77 when this machine cannot apply it (no libseccomp, an old kernel).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys

UNSUPPORTED = 77
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_ERRNO = 0x00050000
PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--errno", type=int, required=True)
    parser.add_argument("--allow", required=True, help="system call names, comma-separated")
    parser.add_argument("--mdwe", action="store_true")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    libc = ctypes.CDLL(None, use_errno=True)
    if args.mdwe and libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        print(f"sandbox_exec: PR_SET_MDWE: {os.strerror(ctypes.get_errno())}", file=sys.stderr)
        return UNSUPPORTED
    try:
        seccomp = ctypes.CDLL("libseccomp.so.2")
    except OSError as exc:
        print(f"sandbox_exec: {exc}", file=sys.stderr)
        return UNSUPPORTED
    seccomp.seccomp_init.restype = ctypes.c_void_p
    seccomp.seccomp_init.argtypes = [ctypes.c_uint32]
    seccomp.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    seccomp.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    seccomp.seccomp_load.argtypes = [ctypes.c_void_p]
    ctx = seccomp.seccomp_init(SCMP_ACT_ERRNO | args.errno)
    if not ctx:
        print("sandbox_exec: seccomp_init failed", file=sys.stderr)
        return UNSUPPORTED
    for name in args.allow.split(","):
        nr = seccomp.seccomp_syscall_resolve_name(name.encode())
        if nr < 0:  # not a system call of this architecture (systemd skips those too)
            continue
        rc = seccomp.seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0)
        if rc != 0:
            print(f"sandbox_exec: cannot allow {name}: {os.strerror(-rc)}", file=sys.stderr)
            return 1
    rc = seccomp.seccomp_load(ctx)
    if rc != 0:
        print(f"sandbox_exec: seccomp_load: {os.strerror(-rc)}", file=sys.stderr)
        return UNSUPPORTED
    os.execvp(command[0], command)


if __name__ == "__main__":
    sys.exit(main())
