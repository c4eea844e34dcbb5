"""Resolve the recorded hostnames to their recorded addresses, without DNS.

``socket.getaddrinfo`` answers a recorded name by asking the real ``getaddrinfo`` about each
recorded address as a numeric host (``AI_NUMERICHOST``: no DNS, no files), so the port/service,
socket type, protocol and flags semantics and the tuple shapes are exactly the C library's.
``gethostbyname``, ``gethostbyname_ex`` and ``gethostbyaddr`` follow. asyncio's
``loop.getaddrinfo`` calls ``socket.getaddrinfo`` in a thread, so it is covered as is. uvloop
resolves in C through libuv for ``create_connection``/``create_datagram_endpoint``, so
``uvloop.Loop`` gets Python overrides of ``getaddrinfo``, ``create_connection`` and
``create_datagram_endpoint`` that substitute the recorded addresses before libuv sees a name.
"""

import ipaddress
import json
import socket

_orig = {}


def load_hosts(path):
    with open(path, "rb") as f:
        raw = f.read()
    try:
        data = json.loads(raw.decode("utf-8"))
    except ValueError as e:
        raise ValueError("%s is not valid JSON: %s" % (path, e))
    if not isinstance(data, dict):
        raise ValueError('%s must be a JSON object {"hostname": ["ip", ...]}' % path)
    hosts = {}
    for name, addrs in data.items():
        if isinstance(addrs, str):
            addrs = [addrs]
        if not isinstance(addrs, list) or not addrs:
            raise ValueError("%s: %r must map to a non-empty list of addresses" % (path, name))
        clean = []
        for a in addrs:
            if not isinstance(a, str):
                raise ValueError("%s: %r is not an IP address string (for %r)" % (path, a, name))
            try:
                ipaddress.ip_address(a.split("%", 1)[0])
            except ValueError:
                raise ValueError("%s: %r is not an IP address (for %r)" % (path, a, name))
            clean.append(a)
        key = normalize(name)
        if not key:
            raise ValueError("%s: empty hostname" % path)
        for a in clean:
            if a not in hosts.setdefault(key, []):
                hosts[key].append(a)
    return hosts


def normalize(host):
    if isinstance(host, (bytes, bytearray)):
        try:
            host = bytes(host).decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(host, str):
        return None
    host = host.strip()
    if host.endswith("."):
        host = host[:-1]
    return host.lower()


def _is_v6(addr):
    return ":" in addr


class Resolver:
    def __init__(self, hosts):
        self.hosts = hosts
        self.reverse = {}
        for name, addrs in hosts.items():
            for a in addrs:
                self.reverse.setdefault(a.split("%", 1)[0], name)

    def lookup(self, host):
        if host is None:
            return None
        key = normalize(host)
        if key is None:
            return None
        addrs = self.hosts.get(key)
        if addrs is None and not key.isascii():
            try:  # an internationalized name: recordings carry its ASCII (punycode) form
                addrs = self.hosts.get(key.encode("idna").decode("ascii"))
            except UnicodeError:
                pass
        return addrs

    def getaddrinfo(self, host, port, family=0, type=0, proto=0, flags=0):
        """The real getaddrinfo's answer had DNS returned the recorded addresses for host."""
        orig = _orig["getaddrinfo"]
        addrs = self.lookup(host)
        if addrs is None or flags & socket.AI_NUMERICHOST:
            return orig(host, port, family, type, proto, flags)
        family = int(family)
        if family not in (socket.AF_UNSPEC, socket.AF_INET, socket.AF_INET6):
            return orig(host, port, family, type, proto, flags)
        v4 = [a for a in addrs if not _is_v6(a)]
        v6 = [a for a in addrs if _is_v6(a)]
        if family == socket.AF_INET:
            chosen = [(socket.AF_INET, a) for a in v4]
        elif family == socket.AF_INET6:
            chosen = [(socket.AF_INET6, a) for a in v6]
            v4mapped = getattr(socket, "AI_V4MAPPED", 0)
            if flags & v4mapped and (not v6 or flags & getattr(socket, "AI_ALL", 0)):
                chosen += [(socket.AF_INET6, "::ffff:" + a) for a in v4]
        else:
            chosen = [(socket.AF_INET6 if _is_v6(a) else socket.AF_INET, a) for a in addrs]
        if not chosen:
            raise socket.gaierror(
                getattr(socket, "EAI_ADDRFAMILY", socket.EAI_NONAME),
                "Address family for hostname not supported",
            )
        # Our recorded answer is authoritative: no AI_ADDRCONFIG filtering, and the canonical
        # name is the recorded one.
        numeric_flags = (flags | socket.AI_NUMERICHOST) & ~getattr(socket, "AI_ADDRCONFIG", 0)
        numeric_flags &= ~(getattr(socket, "AI_V4MAPPED", 0) | getattr(socket, "AI_ALL", 0))
        out = []
        for fam, addr in chosen:
            out.extend(orig(addr, port, fam, type, proto, numeric_flags))
        if flags & socket.AI_CANONNAME and out:
            canon = normalize(host)
            out = [(f, t, p, canon if i == 0 else "", sa) for i, (f, t, p, _c, sa) in enumerate(out)]
        return out

    def gethostbyname(self, hostname):
        if self.lookup(hostname) is None:
            return _orig["gethostbyname"](hostname)
        return self.getaddrinfo(hostname, None, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]

    def gethostbyname_ex(self, hostname):
        if self.lookup(hostname) is None:
            return _orig["gethostbyname_ex"](hostname)
        infos = self.getaddrinfo(hostname, None, socket.AF_INET, socket.SOCK_STREAM)
        return (normalize(hostname), [], [sa[0] for _f, _t, _p, _c, sa in infos])

    def gethostbyaddr(self, ip_address):
        name = self.reverse.get(ip_address) if isinstance(ip_address, str) else None
        if name is None:
            return _orig["gethostbyaddr"](ip_address)
        return (name, [], [ip_address])


def install(path, state, warn, post_import):
    hosts = load_hosts(path)
    resolver = Resolver(hosts)
    if "getaddrinfo" not in _orig:
        for fn in ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr"):
            _orig[fn] = getattr(socket, fn)
    _install_socket(resolver)
    post_import("uvloop", lambda m: _patch_uvloop(m, resolver, state))
    return hosts


def _wrap(name, fn):
    orig = _orig[name]
    fn.__name__ = orig.__name__
    fn.__qualname__ = getattr(orig, "__qualname__", orig.__name__)
    fn.__doc__ = orig.__doc__
    fn.__wrapped__ = orig
    setattr(socket, name, fn)


def _install_socket(r):
    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        return r.getaddrinfo(host, port, family, type, proto, flags)

    def gethostbyname(hostname):
        return r.gethostbyname(hostname)

    def gethostbyname_ex(hostname):
        return r.gethostbyname_ex(hostname)

    def gethostbyaddr(ip_address):
        return r.gethostbyaddr(ip_address)

    _wrap("getaddrinfo", getaddrinfo)
    _wrap("gethostbyname", gethostbyname)
    _wrap("gethostbyname_ex", gethostbyname_ex)
    _wrap("gethostbyaddr", gethostbyaddr)


def _patch_uvloop(uvloop, r, state):
    Loop = uvloop.Loop
    if getattr(Loop, "_timetracer_patched", False):
        return
    orig_getaddrinfo = Loop.getaddrinfo
    orig_create_connection = Loop.create_connection
    orig_create_datagram_endpoint = Loop.create_datagram_endpoint

    async def getaddrinfo(self, host, port, *, family=0, type=0, proto=0, flags=0):
        if r.lookup(host) is None:
            return await orig_getaddrinfo(
                self, host, port, family=family, type=type, proto=proto, flags=flags
            )
        # Numeric lookups only: no blocking, no need for a thread.
        return r.getaddrinfo(host, port, family, type, proto, flags)

    async def create_connection(self, protocol_factory, host=None, port=None, **kwargs):
        if r.lookup(host) is None or kwargs.get("sock") is not None:
            return await orig_create_connection(self, protocol_factory, host, port, **kwargs)
        infos = r.getaddrinfo(
            host,
            port,
            kwargs.get("family", 0),
            socket.SOCK_STREAM,
            kwargs.get("proto", 0),
            kwargs.get("flags", 0),
        )
        if kwargs.get("ssl") and kwargs.get("server_hostname") is None:
            kwargs["server_hostname"] = host  # what uvloop would have used
        errors = []
        for fam, _type, _proto, _canon, sockaddr in infos:
            kw = dict(kwargs, family=fam)
            try:
                return await orig_create_connection(
                    self, protocol_factory, sockaddr[0], sockaddr[1], **kw
                )
            except OSError as e:
                errors.append(e)
        if len(errors) == 1:
            raise errors[0]
        raise OSError("Multiple exceptions: {}".format(", ".join(str(e) for e in errors)))

    async def create_datagram_endpoint(
        self, protocol_factory, local_addr=None, remote_addr=None, **kwargs
    ):
        if (
            isinstance(remote_addr, (tuple, list))
            and len(remote_addr) == 2
            and r.lookup(remote_addr[0]) is not None
        ):
            infos = r.getaddrinfo(
                remote_addr[0],
                remote_addr[1],
                kwargs.get("family", 0),
                socket.SOCK_DGRAM,
                kwargs.get("proto", 0),
                kwargs.get("flags", 0),
            )
            fam, _t, _p, _c, sockaddr = infos[0]
            remote_addr = (sockaddr[0], sockaddr[1])
            kwargs["family"] = fam
        return await orig_create_datagram_endpoint(
            self, protocol_factory, local_addr, remote_addr, **kwargs
        )

    for new, old in (
        (getaddrinfo, orig_getaddrinfo),
        (create_connection, orig_create_connection),
        (create_datagram_endpoint, orig_create_datagram_endpoint),
    ):
        new.__name__ = old.__name__
        new.__qualname__ = "Loop." + old.__name__
        new.__doc__ = old.__doc__
        new.__wrapped__ = old
        setattr(Loop, old.__name__, new)
    Loop._timetracer_patched = True
    state["uvloop"] = True
