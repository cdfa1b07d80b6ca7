#!/usr/bin/env python3
"""Run the Argilla 1.5 server with its users kept in step with the gateway's users file.

    python deploy/argilla-upstream.py --users GATEWAY_USERS_FILE --host HOST --port PORT

Run it with the Python that has `argilla[server]` 1.5.x installed (the argilla/argilla-server:v1.5.1
image, or the end-to-end suite's .e2e/venv-server). Argilla's usual environment variables apply
(ARGILLA_ELASTICSEARCH, ARGILLA_ENABLE_TELEMETRY, ...), plus:

  ARGILLA_GATEWAY_UPSTREAM_MODE     service (default) or passthrough, as given to the gateway
  ARGILLA_GATEWAY_UPSTREAM_API_KEY  service mode: the key the gateway sends upstream

What the server knows as its users, and keeps knowing while the gateway's file changes:

  service      ONE superuser, "gateway-service", whose api_key is ARGILLA_GATEWAY_UPSTREAM_API_KEY
               and whose `workspaces` are every workspace and every username of the gateway's
               file (an Argilla 1.5 superuser reaches only workspaces named by its users). Its
               password hash matches no password: nobody logs in upstream.
  passthrough  The gateway's users themselves, so that each user's own api_key works upstream
               (a `disabled: true` user's key excepted: Argilla 1.5 would let it in).

Argilla 1.5 reads its users file once, into a module-level `UsersDAO` singleton. This launcher
runs the server in its own process (uvicorn, programmatically) and replaces that singleton's
users whenever the gateway's file changes: it watches the file's folder (renames, Kubernetes'
`..data` symlink swap) and checks the file every 0.25 s as well; SIGHUP checks at once. A change
applies within a second, without a restart. The new users are built and validated first, then
swapped in with one assignment, so a request sees the old users or the new ones. The file is
read 20 ms after a file event, before the gateway's 50 ms debounce ends, and for 0.3 s after a
change the server also knows the users of the version before (old keys, old workspaces, removed
users): what the gateway sends while it applies the same change is not refused. A file the
gateway would refuse is refused here too (same rules: README, "The users file"): the last good
users stay in force and the reason is logged. The server starts only on an Argilla version this
was tested with (1.5.x), whose `UsersDAO` it checks before serving.

Argilla's public defaults (the key `argilla.apikey`, also answered as `rubrix.apikey`, and the
token secret `secret`) are replaced with random values at every start; nothing behind the
gateway uses them. No secret is ever logged. Exit status 2 for a usage or configuration error,
1 when the server cannot start or stops on an error.
"""

import argparse
import gc
import hashlib
import logging
import os
import re
import secrets
import signal
import stat
import sys
import threading
import time

import yaml

LOG = logging.getLogger("argilla-upstream")

SERVICE_USERNAME = "gateway-service"
# bcrypt hash of a random password that was thrown away: it verifies no password.
UNUSABLE_HASH = "$2b$12$MEYm7uonwxctdt5goRs.leo4ccvq0INTrGBiMG9JtQWMfraK6REIS"
# Argilla's public defaults, never to be trusted as keys.
PUBLIC_KEYS = ("argilla.apikey", "rubrix.apikey")
# The Argilla versions whose users object this launcher knows (module, class, singleton).
TESTED_VERSIONS = re.compile(r"^1\.5\.\d+$")
# How often the file is checked when no file event arrives, and how long a burst of events
# is let settle before the file is read.
POLL_SECONDS = 0.25
SETTLE_SECONDS = 0.02
# After a change, how long the users of the file before it stay known upstream beside the new
# ones. The gateway applies the same change a few tens of milliseconds apart (its own 50 ms
# debounce): for that long it may still send the old key of a user whose key changed, or a
# workspace about to go, and the upstream must not refuse them.
OVERLAP_SECONDS = 0.3
# Largest users file read, as in the gateway.
MAX_FILE_BYTES = 256 << 20

USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
# Argilla 1.5's e-mail pattern (argilla/server/security/model.py), applied as pydantic does (match).
ARGILLA_EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Z|a-z]{2,}")
WORKSPACE_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_-]*$")
USERNAME_RULE = "lowercase letters, digits, `-` and `_`, not starting with `-` or `_`"
WORKSPACE_RULE = "letters, digits, `-` and `_`, starting with a letter or digit"
TEXT_FIELDS = ("username", "hashed_password", "api_key", "email", "full_name")
KNOWN_FIELDS = TEXT_FIELDS + ("disabled", "workspaces", "superuser")
NOT_TEXT = "a value YAML reads as a number or a boolean where text is expected: quote it"


class UsageError(Exception):
    """A configuration the operator must fix: exit status 2."""


class UsersFileError(Exception):
    """The gateway's users file cannot be used; the message names the file, line and user."""


# ---------------------------------------------------------------- reading the gateway's file
class GatewayLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """PyYAML's safe loader (libyaml's when present: six times faster), reading scalars as the
    gateway does (serde_yaml, YAML 1.2).

    The gateway reads `yes`, `no`, `on`, `off`, `0777`, `1_000` and dates as text, `1e3` as a
    number, and refuses duplicate keys; PyYAML's YAML 1.1 would read each of them otherwise and
    keep the last duplicate. Read the same file the same way, or the two would disagree about
    which file is usable.
    """


class Number:
    """A scalar the gateway reads as a number: never text, whatever PyYAML would make of it."""


# PyYAML's YAML 1.1 resolvers, except those the gateway's YAML 1.2 reading answers otherwise:
# booleans (`yes`, `on`), numbers (`1_000`, `0777`, `1:20`), dates, and the `<<` merge key.
KEPT_RESOLVERS = ("tag:yaml.org,2002:null", "tag:yaml.org,2002:str")
GatewayLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag in KEPT_RESOLVERS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
GatewayLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
# serde_yaml's numbers: 0x/0o/0b integers, decimal integers and floats as Rust parses them
# (`1e3`, `-.5`), `.inf` and `.nan`, but not digits with a leading zero (`0777` is text).
GatewayLoader.add_implicit_resolver(
    "tag:argilla-gateway:number",
    re.compile(
        r"""^(?![-+]?0[0-9]+$)(?:[-+]?(?:0x[0-9a-fA-F]+|0o[0-7]+|0b[01]+)
        |[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)
GatewayLoader.add_constructor("tag:argilla-gateway:number", lambda loader, node: Number())


def _construct_mapping(loader, node, deep=False):
    seen = {}
    for key_node, _ in node.value:
        if isinstance(key_node, yaml.ScalarNode):
            if key_node.value in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    "duplicate key %r (first on line %d)" % (key_node.value, seen[key_node.value]),
                    key_node.start_mark,
                )
            seen[key_node.value] = key_node.start_mark.line + 1
    return yaml.constructor.SafeConstructor.construct_mapping(loader, node, deep)


GatewayLoader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)


def is_bcrypt_hash(value):
    """The gateway's rule: `$2a$`, `$2b$` or `$2y$`, four `$` parts with a numeric cost, 60 long."""
    if not value.startswith(("$2a$", "$2b$", "$2y$")) or len(value) != 60:
        return False
    parts = value.split("$")
    return len(parts) == 4 and re.match(r"^\+?[0-9]+$", parts[2]) is not None and len(parts[3]) >= 22


def is_header_value(value):
    """Non-empty, and every byte printable or a tab (what an HTTP header may carry)."""
    return value != "" and all(b == 9 or (b >= 32 and b != 127) for b in value.encode("utf-8"))


def parse_users(path, data):
    """Validates the gateway's users file content; returns its entries (dicts), in file order.

    Raises UsersFileError naming every problem with its line and user, as the gateway does.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsersFileError("%s: not UTF-8 text (first bad byte at offset %d)" % (path, e.start))
    if not text.strip():
        raise UsersFileError("%s: the file is empty; expected a YAML list of users (write `[]` for none)" % path)
    loader = GatewayLoader(text)
    # Pausing the garbage collector halves the time of a large file (many small objects).
    collecting = gc.isenabled()
    gc.disable()
    try:
        node = loader.get_single_node()
        entries = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = "line %d, column %d: " % (mark.line + 1, mark.column + 1) if mark else ""
        context = " (%s)" % e.context if e.context else ""
        raise UsersFileError("%s: %s%s%s" % (path, where, e.problem or "invalid YAML", context))
    except yaml.YAMLError as e:
        raise UsersFileError("%s: %s" % (path, " ".join(str(e).split())))
    finally:
        loader.dispose()
        if collecting:
            gc.enable()
    if not isinstance(entries, list):
        if entries is None:
            raise UsersFileError("%s: the file holds no list of users (write `[]` for none)" % path)
        raise UsersFileError("%s: expected a YAML list of users (`- username: ...`)" % path)
    lines = [item.start_mark.line + 1 for item in node.value]

    problems = []
    names = {}
    keys = {}
    for index, entry in enumerate(entries):
        username = entry.get("username") if isinstance(entry, dict) else None
        place = "line %d, user #%d (%r)" % (lines[index], index + 1, username if isinstance(username, str) else "")
        before = len(problems)
        if not isinstance(entry, dict):
            problems.append("%s: expected a mapping of user fields" % place)
            continue
        for field in entry:
            if field not in KNOWN_FIELDS:
                problems.append(
                    "%s: unknown field %r, expected one of %s" % (place, str(field), ", ".join(KNOWN_FIELDS))
                )
        for field in ("username", "hashed_password", "api_key"):
            if field not in entry:
                problems.append("%s: missing field `%s`" % (place, field))
        for field in TEXT_FIELDS:
            value = entry.get(field)
            optional = field in ("email", "full_name")
            if field in entry and not isinstance(value, str) and not (value is None and optional):
                problems.append("%s: %s: %s" % (place, field, NOT_TEXT))
        for field in ("disabled", "superuser"):
            if entry.get(field) is not None and not isinstance(entry[field], bool):
                problems.append("%s: %s must be true or false" % (place, field))
        workspaces = entry.get("workspaces")
        if workspaces is not None and not isinstance(workspaces, list):
            problems.append("%s: workspaces must be a list of names" % place)
        if len(problems) > before:
            continue
        if not USERNAME_RE.match(username):
            problems.append("%s: username must be %s" % (place, USERNAME_RULE))
        if not is_bcrypt_hash(entry["hashed_password"]):
            problems.append(
                "%s: hashed_password is not a bcrypt hash (expected $2a$, $2b$ or $2y$, as written by "
                "`argilla-gateway hash-password` or `htpasswd -nbB`)" % place
            )
        if not is_header_value(entry["api_key"]):
            problems.append("%s: api_key must be a non-empty string of printable characters" % place)
        email = entry.get("email")
        if email is not None:
            local, at, domain = email.partition("@")
            if not (at and local and domain) or any(c.isspace() for c in email):
                problems.append("%s: email is not an e-mail address" % place)
        for workspace in workspaces or []:
            if not isinstance(workspace, str):
                problems.append("%s: workspaces: %s" % (place, NOT_TEXT))
            elif not WORKSPACE_RE.match(workspace):
                problems.append("%s: workspace %r must be %s" % (place, workspace, WORKSPACE_RULE))
        if len(problems) > before:
            continue
        if username in names:
            problems.append("%s: duplicate username, also at %s" % (place, names[username]))
            continue
        digest = hashlib.sha256(entry["api_key"].encode("utf-8")).digest()
        if digest in keys:
            problems.append(
                "%s: duplicate api_key, the same key as %s (keys must be unique)" % (place, keys[digest])
            )
            continue
        names[username] = place
        keys[digest] = place
    if problems:
        raise UsersFileError("%s:\n  %s" % (path, "\n  ".join(problems)))
    return entries


def read_users_file(path):
    """The file's bytes, refusing what is not a regular file of sane size (as the gateway)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UsersFileError("%s: file not found" % path)
    except OSError as e:
        raise UsersFileError("%s: cannot read: %s" % (path, e.strerror))
    if not stat.S_ISREG(st.st_mode):
        raise UsersFileError("%s: not a regular file" % path)
    if st.st_size > MAX_FILE_BYTES:
        raise UsersFileError(
            "%s: %d bytes, more than the %d a users file may have" % (path, st.st_size, MAX_FILE_BYTES)
        )
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise UsersFileError("%s: cannot read: %s" % (path, e.strerror))


def workspaces_of(entries):
    """Every workspace the file names (listed ones and usernames), sorted."""
    names = set()
    for entry in entries:
        names.add(entry["username"])
        names.update(entry.get("workspaces") or [])
    return sorted(names)


def upstream_entry(entry):
    """One user of the gateway's file as the passthrough upstream must know them."""
    entry = dict(entry)
    if entry.get("disabled"):
        # Argilla 1.5 lets a disabled user's API key in (it checks `disabled` on login tokens
        # only); the gateway never forwards such a user's request, so upstream their key is
        # replaced with a random one that nobody holds.
        entry["api_key"] = "disabled." + secrets.token_hex(32)
    if entry.get("email") is not None and not ARGILLA_EMAIL_RE.match(entry["email"]):
        # The gateway takes any `local@domain`; Argilla's model refuses what its own pattern does
        # not match (`alice@localhost`), which would stop the whole file upstream. The e-mail is
        # only shown by /api/me, which the gateway answers itself.
        del entry["email"]
    return entry


def is_superuser(entry):
    """Argilla 1.5's rule, the gateway's too: `superuser:` if given, else no `workspaces`."""
    return entry["superuser"] if entry.get("superuser") is not None else entry.get("workspaces") is None


def overlap(old_entries, new_entries):
    """Both files' users at once (passthrough): each user with the reach of both versions, and
    their old key beside the new one where it changed (an entry marked `_alias`)."""
    old_by_name = {entry["username"]: entry for entry in old_entries}
    new_names = {entry["username"] for entry in new_entries}
    merged = []
    for entry in new_entries:
        old = old_by_name.get(entry["username"])
        if old is None:
            merged.append(entry)
            continue
        both = dict(entry)
        both["superuser"] = is_superuser(old) or is_superuser(entry)
        both["workspaces"] = sorted(set(old.get("workspaces") or []) | set(entry.get("workspaces") or []))
        merged.append(both)
        if old["api_key"] != entry["api_key"]:
            merged.append(dict(both, api_key=old["api_key"], _alias=True))
    merged.extend(old for old in old_entries if old["username"] not in new_names)
    return merged


def upstream_entries(entries, mode, service_key, previous=None):
    """The users the upstream must know, as Argilla 1.5 user fields; with `previous` (the
    entries of the file before), those of both files, for the overlap after a change."""
    if previous is not None:
        entries = overlap(previous, entries) if mode == "passthrough" else previous + entries
    if mode == "passthrough":
        return [upstream_entry(entry) for entry in entries]
    return [
        {
            "username": SERVICE_USERNAME,
            "api_key": service_key,
            "hashed_password": UNUSABLE_HASH,
            "full_name": "argilla-gateway service account",
            "superuser": True,
            "workspaces": workspaces_of(entries),
        }
    ]


# ---------------------------------------------------------------- configuration
def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="argilla-upstream.py",
        description="Run the Argilla 1.5 server with its users kept in step with the gateway's users file.",
    )
    parser.add_argument("--users", required=True, metavar="GATEWAY_USERS_FILE", help="the gateway's users.yml")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=6900, help="port to listen on (default 6900)")
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error("--port must be between 1 and 65535, not %d" % args.port)
    return args


def read_settings(environ):
    """(mode, service key or None) from the environment; raises UsageError with what to fix."""
    mode = (environ.get("ARGILLA_GATEWAY_UPSTREAM_MODE") or "").strip() or "service"
    if mode not in ("service", "passthrough"):
        raise UsageError(
            "ARGILLA_GATEWAY_UPSTREAM_MODE must be `service` or `passthrough` (as given to the gateway), got %r" % mode
        )
    if environ.get("ARGILLA_LOCAL_AUTH_USERS_DB_FILE"):
        raise UsageError(
            "ARGILLA_LOCAL_AUTH_USERS_DB_FILE is set: this launcher gives the server its users from "
            "--users (the gateway's file); unset the variable"
        )
    key = environ.get("ARGILLA_GATEWAY_UPSTREAM_API_KEY") or ""
    if mode == "passthrough":
        return mode, None
    if not key.strip():
        raise UsageError(
            "ARGILLA_GATEWAY_UPSTREAM_API_KEY is not set: in service mode it is the key the gateway sends "
            "upstream (the same value for both); generate one with `openssl rand -hex 32`"
        )
    if key in PUBLIC_KEYS:
        raise UsageError("ARGILLA_GATEWAY_UPSTREAM_API_KEY is Argilla's public default key: use a long random value")
    if not is_header_value(key):
        raise UsageError("ARGILLA_GATEWAY_UPSTREAM_API_KEY must be printable characters only")
    return mode, key


def replace_public_defaults(environ):
    """Random values for Argilla's default API key and token secret, before Argilla reads them."""
    environ["ARGILLA_LOCAL_AUTH_DEFAULT_APIKEY"] = secrets.token_hex(32)
    secret = secrets.token_hex(32)
    # Argilla 1.5 reads the token secret from SECRET_KEY or ARGILLA_LOCAL_AUTH_SECRET_KEY.
    environ["ARGILLA_LOCAL_AUTH_SECRET_KEY"] = secret
    environ["SECRET_KEY"] = secret
    environ.pop("ARGILLA_GATEWAY_UPSTREAM_API_KEY", None)


# ---------------------------------------------------------------- Argilla's users object
def check_argilla_version():
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover - Python < 3.8
        raise UsageError("Python 3.8 or newer is needed")
    try:
        found = version("argilla")
    except PackageNotFoundError:
        raise UsageError(
            "argilla is not installed in %s: run this with the Python that has `argilla[server]==1.5.*`"
            % sys.executable
        )
    if not TESTED_VERSIONS.match(found):
        raise UsageError(
            "argilla %s is installed, but this launcher knows only Argilla 1.5.x's users object "
            "(argilla/server/security/auth_provider/local/users/dao.py); run it with argilla[server] 1.5" % found
        )
    return found


class ArgillaUsers:
    """The running server's users: Argilla 1.5's `UsersDAO` singleton, replaced whole."""

    def __init__(self):
        from argilla.server.security import auth
        from argilla.server.security.auth_provider.local.users import dao as dao_module
        from argilla.server.security.auth_provider.local.users.model import UserInDB

        dao = getattr(dao_module, "_instance", None)
        service = getattr(getattr(auth, "users", None), "__dao__", None)
        if dao is None or not isinstance(getattr(dao, "__users__", None), dict) or service is not dao:
            raise UsageError(
                "this Argilla does not keep its users where Argilla 1.5 does (users.dao._instance.__users__, "
                "used by the auth provider); refusing to start"
            )
        self._dao = dao
        self._model = UserInDB

    def build(self, entries):
        """Validated Argilla users, keyed by username; raises UsersFileError."""
        users = {}
        for entry in entries:
            entry = dict(entry)
            alias = entry.pop("_alias", False)
            try:
                user = self._model(**entry)
            except Exception as e:  # pydantic.ValidationError: it names fields, never a key or hash
                why = " ".join(str(e).split())
                raise UsersFileError("user %r: Argilla 1.5 refuses it: %s" % (entry.get("username"), why))
            # An old key during the overlap: Argilla finds users by key among all values, and by
            # name by dict key, so the alias answers its key and hides nothing.
            users[user.username + ("\0previous-key" if alias else "")] = user
        return users

    def swap(self, users):
        # One attribute store: readers iterate the dict they started with, never a half-built one.
        self._dao.__users__ = users


# ---------------------------------------------------------------- keeping them in step
class Sync:
    """Reads the gateway's file when it may have changed and applies it to the server."""

    def __init__(self, path, mode, service_key, argilla_users):
        self.path = path
        self.mode = mode
        self.service_key = service_key
        self.argilla = argilla_users
        self.applied_digest = None
        self.applied_entries = None
        self.failed_digest = None
        self.failed_message = None
        # The file's users alone, applied when the overlap after a change ends (monotonic time).
        self.pending = None
        self.pending_at = None
        self.wake = threading.Event()
        self.stop = threading.Event()

    def apply_initial(self):
        """Applies the file at start; raises UsersFileError when it is unusable."""
        self.check(initial=True)

    def check(self, initial=False):
        """Applies the file if it changed; on failure keeps the last good users and logs once."""
        started = time.monotonic()
        digest = None
        try:
            try:
                data = read_users_file(self.path)
                digest = hashlib.sha256(data).digest()
            except UsersFileError:
                digest = b"unreadable"
                raise
            if digest == self.applied_digest:
                self.failed_digest = None
                return
            if digest == self.failed_digest:
                return
            entries = parse_users(self.path, data)
            users = self.argilla.build(upstream_entries(entries, self.mode, self.service_key))
            if initial:
                self.argilla.swap(users)
            else:
                both = upstream_entries(entries, self.mode, self.service_key, previous=self.applied_entries)
                self.argilla.swap(self.argilla.build(both))
                self.pending, self.pending_at = users, time.monotonic() + OVERLAP_SECONDS
        except UsersFileError as e:
            if initial:
                raise
            if digest != self.failed_digest or str(e) != self.failed_message:
                LOG.error("users file not applied, the last good users stay in force: %s", e)
            self.failed_digest = digest
            self.failed_message = str(e)
            return
        self.applied_digest = digest
        self.applied_entries = entries
        self.failed_digest = None
        LOG.info(
            "upstream users %s from %s (%s mode): %d users, %d workspaces, in %.0f ms",
            "loaded" if initial else "reloaded",
            self.path,
            self.mode,
            len(entries),
            len(workspaces_of(entries)),
            (time.monotonic() - started) * 1000,
        )

    def stat_signature(self):
        try:
            st = os.stat(self.path)  # follows symlinks: a `..data` swap changes the inode
            return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        except OSError as e:
            return ("error", e.errno)

    def end_overlap(self):
        """Leaves the new file's users alone once the overlap after a change has run out."""
        if self.pending is not None and time.monotonic() >= self.pending_at:
            self.argilla.swap(self.pending)
            self.pending = None

    def run(self):
        """The checking loop: file events, SIGHUP, or a changed stat signature wake it."""
        last = self.stat_signature()
        while not self.stop.is_set():
            timeout = POLL_SECONDS
            if self.pending is not None:
                timeout = max(0.0, min(timeout, self.pending_at - time.monotonic()))
            woken = self.wake.wait(timeout)
            if self.stop.is_set():
                return
            try:
                self.end_overlap()
                now = self.stat_signature()
                if not woken and now == last:
                    continue
                if woken:
                    time.sleep(SETTLE_SECONDS)  # let a burst of events (write, rename) finish
                    self.wake.clear()
                last = self.stat_signature()
                self.check()
            except Exception:  # never let the checker die: the poll tries again
                LOG.exception("users file check failed")

    def watch_folder(self):
        """File events of the file's folder, when watchfiles (uvicorn[standard]) is installed."""
        try:
            from watchfiles import watch
        except ImportError:
            LOG.warning("watchfiles is not installed: the users file is checked every %.2f s only", POLL_SECONDS)
            return
        folder = os.path.dirname(os.path.abspath(self.path))
        # Only the file's own name and Kubernetes' `..data` link: other files of the folder
        # (a log written beside it, say) must not keep waking the check.
        names = {os.path.basename(self.path), "..data"}

        def relevant(_change, changed):
            return os.path.basename(changed) in names

        logging.getLogger("watchfiles").setLevel(logging.WARNING)
        while not self.stop.is_set():
            try:
                changes = watch(
                    folder, watch_filter=relevant, debounce=200, step=5, stop_event=self.stop, raise_interrupt=False
                )
                for _ in changes:
                    self.wake.set()
            except TypeError as e:  # a watchfiles too old for these arguments
                LOG.warning("watchfiles cannot watch %s (%s): checking every %.2f s only", folder, e, POLL_SECONDS)
                return
            except Exception as e:
                LOG.warning("watching %s failed (%s); watching again in 5 s (the poll goes on)", folder, e)
                self.stop.wait(5)

    def start(self):
        for name, target in (("users-check", self.run), ("users-watch", self.watch_folder)):
            threading.Thread(target=target, name=name, daemon=True).start()


# ---------------------------------------------------------------- main
def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    args = parse_args(argv)
    try:
        mode, service_key = read_settings(os.environ)
        # Validate the file before anything starts: a configured file that is unusable at start
        # is an error, never a silent fallback (as in the gateway).
        entries = parse_users(args.users, read_users_file(args.users))
        version = check_argilla_version()
        replace_public_defaults(os.environ)
        # Importing Argilla's security package builds its users object from its users file: give
        # it an empty one (never a stray .users.yml of the working directory), then ours.
        import tempfile

        with tempfile.TemporaryDirectory() as empty:
            os.environ["ARGILLA_LOCAL_AUTH_USERS_DB_FILE"] = os.path.join(empty, "users.yml")
            with open(os.environ["ARGILLA_LOCAL_AUTH_USERS_DB_FILE"], "w") as f:
                f.write("[]\n")
            argilla_users = ArgillaUsers()
        del os.environ["ARGILLA_LOCAL_AUTH_USERS_DB_FILE"]
        sync = Sync(args.users, mode, service_key, argilla_users)
        sync.apply_initial()
    except UsageError as e:
        LOG.error("%s", e)
        return 2
    except UsersFileError as e:
        LOG.error("cannot start: %s", e)
        return 2
    LOG.info(
        "Argilla %s on %s:%d, %s mode, %d users in the gateway's file; "
        "Argilla's default key and token secret are random",
        version,
        args.host,
        args.port,
        mode,
        len(entries),
    )

    import uvicorn
    from argilla.server.server import app

    signal.signal(signal.SIGHUP, lambda *_: sync.wake.set())
    sync.start()
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, lifespan="on"))
    try:
        server.run()
    finally:
        sync.stop.set()
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
