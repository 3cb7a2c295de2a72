#!/usr/bin/env python3
"""The sandbox's service manager: runs the service a systemd unit file describes, as systemd
would for these lines: `EnvironmentFile=` (read as systemd reads it: `KEY=value` lines, values
double- or single-quoted or bare), `Environment=`, `WorkingDirectory=` and `ExecStart=`.
Everything else (users, hardening, restarts) only a real VM's systemd does.

Usage: run-unit.py UNIT_FILE. Replaces itself with the service's program (same process id)."""
import os
import shlex
import sys


def read_unit(path):
    """The [Service] lines of a unit: (key, value) pairs in order."""
    section, lines = None, []
    with open(path) as f:
        for raw in f:
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = line
                continue
            if section == "[Service]" and "=" in line:
                key, value = line.split("=", 1)
                lines.append((key.strip(), value.strip()))
    return lines


def read_environment_file(path):
    """`KEY=value` assignments as systemd's EnvironmentFile= reads them."""
    with open(path) as f:
        text = f.read()
    env, i, n = {}, 0, len(text)
    while i < n:
        # Skip blank space and comment lines.
        while i < n and text[i] in " \t\r\n":
            i += 1
        if i >= n:
            break
        if text[i] in "#;":
            while i < n and text[i] != "\n":
                i += 1
            continue
        eq = text.find("=", i)
        end_of_line = text.find("\n", i)
        if eq < 0 or (0 <= end_of_line < eq):
            raise SystemExit(f"{path}: a line without '=' near {text[i:i + 20]!r}")
        key = text[i:eq].strip()
        i = eq + 1
        while i < n and text[i] in " \t":
            i += 1
        value = []
        if i < n and text[i] == '"':
            i += 1
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n:
                    if text[i + 1] == "\n":  # a continuation
                        i += 2
                        continue
                    if text[i + 1] in '"\\$`':
                        value.append(text[i + 1])
                        i += 2
                        continue
                value.append(text[i])
                i += 1
            i += 1
            value = "".join(value)
        elif i < n and text[i] == "'":
            end = text.index("'", i + 1)
            value = text[i + 1:end]
            i = end + 1
        else:
            while i < n and text[i] != "\n":
                if text[i] == "\\" and i + 1 < n and text[i + 1] == "\n":
                    i += 2
                    continue
                value.append(text[i])
                i += 1
            value = "".join(value).rstrip()
        # Whatever follows a closing quote on its line is not part of the value.
        while i < n and text[i] != "\n":
            i += 1
        env[key] = value
    return env


def main():
    lines = read_unit(sys.argv[1])
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "HOME", "BAAL_ROOT")}
    command, workdir = None, None
    for key, value in lines:
        if key == "EnvironmentFile":
            optional = value.startswith("-")
            path = value.lstrip("-")
            if os.path.exists(path) or not optional:
                env.update(read_environment_file(path))
        elif key == "Environment":
            for assignment in shlex.split(value):
                name, _, val = assignment.partition("=")
                env[name] = val
        elif key == "WorkingDirectory":
            workdir = value.lstrip("-")
        elif key == "ExecStart":
            command = shlex.split(value.lstrip("-@+!"))
    if not command:
        raise SystemExit(f"{sys.argv[1]}: no ExecStart=")
    if workdir and os.path.isdir(workdir):
        os.chdir(workdir)
    os.execve(command[0], command, env)


main()
