"""Plaintext-to-TLS tunnel for the end-to-end tests of apps that serve HTTPS themselves.

Run: python tls_tunnel.py LISTEN_PORT TARGET_PORT CA_FILE [SERVER_NAME]

Each plaintext connection accepted on 127.0.0.1:LISTEN_PORT becomes one TLS connection to
127.0.0.1:TARGET_PORT (certificate verified against CA_FILE, SNI = SERVER_NAME, default
"localhost"), so a test client's keep-alive connections map one-to-one onto TLS connections
to the app. Bytes are forwarded unchanged in both directions.
"""

import socket
import ssl
import sys
import threading


def pump(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def handle(client, target_port, ctx, name):
    try:
        raw = socket.create_connection(("127.0.0.1", target_port))
        tls = ctx.wrap_socket(raw, server_hostname=name)
    except OSError as e:
        print("tunnel: connect failed: %s" % e, file=sys.stderr, flush=True)
        client.close()
        return
    threading.Thread(target=pump, args=(client, tls), daemon=True).start()
    pump(tls, client)


def main():
    listen_port, target_port, ca = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    name = sys.argv[4] if len(sys.argv) > 4 else "localhost"
    ctx = ssl.create_default_context(cafile=ca)
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", listen_port))
    srv.listen(64)
    print("tunnel listening on %d -> %d" % (listen_port, target_port), file=sys.stderr, flush=True)
    while True:
        client, _ = srv.accept()
        threading.Thread(target=handle, args=(client, target_port, ctx, name), daemon=True).start()


if __name__ == "__main__":
    main()
