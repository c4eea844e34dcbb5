//! Protocol bytes as clients and servers put them on the wire: PostgreSQL frontend/backend
//! messages (protocol 3.0), RESP, and the TLS records the agent looks at (a ClientHello with a
//! server name; other records are opaque ciphertext to it).

/// PostgreSQL.
pub(crate) mod pg {
    fn msg(t: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![t];
        v.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn cs(s: &str) -> Vec<u8> {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        v
    }

    /// `StartupMessage` (protocol 3.0) with `params` (name, value).
    pub(crate) fn startup(params: &[(&str, &str)]) -> Vec<u8> {
        let mut body = 196_608u32.to_be_bytes().to_vec();
        for (k, v) in params {
            body.extend(cs(k));
            body.extend(cs(v));
        }
        body.push(0);
        let mut v = (body.len() as u32 + 4).to_be_bytes().to_vec();
        v.extend(body);
        v
    }

    /// `AuthenticationOk`.
    pub(crate) fn auth_ok() -> Vec<u8> {
        msg(b'R', &0i32.to_be_bytes())
    }

    /// `ParameterStatus`.
    pub(crate) fn parameter_status(name: &str, value: &str) -> Vec<u8> {
        msg(b'S', &[cs(name), cs(value)].concat())
    }

    /// `BackendKeyData`.
    pub(crate) fn backend_key(pid: u32, secret: u32) -> Vec<u8> {
        msg(b'K', &[pid.to_be_bytes(), secret.to_be_bytes()].concat())
    }

    /// `ReadyForQuery` with transaction status `status` (`I`, `T`, `E`).
    pub(crate) fn ready(status: u8) -> Vec<u8> {
        msg(b'Z', &[status])
    }

    /// `Parse` of unnamed/named statement `name` with parameter type oids `types`.
    pub(crate) fn parse(name: &str, sql: &str, types: &[u32]) -> Vec<u8> {
        let mut b = cs(name);
        b.extend(cs(sql));
        b.extend_from_slice(&(types.len() as i16).to_be_bytes());
        for t in types {
            b.extend_from_slice(&t.to_be_bytes());
        }
        msg(b'P', &b)
    }

    /// `Bind` of `stmt` to `portal` with text parameters and text results.
    pub(crate) fn bind(portal: &str, stmt: &str, params: &[Option<&str>]) -> Vec<u8> {
        let mut b = cs(portal);
        b.extend(cs(stmt));
        b.extend_from_slice(&0i16.to_be_bytes()); // all parameters in text format
        b.extend_from_slice(&(params.len() as i16).to_be_bytes());
        for p in params {
            match p {
                Some(p) => {
                    b.extend_from_slice(&(p.len() as i32).to_be_bytes());
                    b.extend_from_slice(p.as_bytes());
                }
                None => b.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        b.extend_from_slice(&0i16.to_be_bytes()); // all results in text format
        msg(b'B', &b)
    }

    /// `Describe` of a portal.
    pub(crate) fn describe_portal(portal: &str) -> Vec<u8> {
        msg(b'D', &[vec![b'P'], cs(portal)].concat())
    }

    /// `Execute` of `portal`, all rows.
    pub(crate) fn execute(portal: &str) -> Vec<u8> {
        let mut b = cs(portal);
        b.extend_from_slice(&0i32.to_be_bytes());
        msg(b'E', &b)
    }

    /// `Sync`.
    pub(crate) fn sync() -> Vec<u8> {
        msg(b'S', &[])
    }

    /// `Terminate`.
    pub(crate) fn terminate() -> Vec<u8> {
        msg(b'X', &[])
    }

    /// `ParseComplete`.
    pub(crate) fn parse_complete() -> Vec<u8> {
        msg(b'1', &[])
    }

    /// `BindComplete`.
    pub(crate) fn bind_complete() -> Vec<u8> {
        msg(b'2', &[])
    }

    /// `NoData`.
    pub(crate) fn no_data() -> Vec<u8> {
        msg(b'n', &[])
    }

    /// `RowDescription` of text columns (name, type oid, type size).
    pub(crate) fn row_description(cols: &[(&str, u32, i16)]) -> Vec<u8> {
        let mut b = (cols.len() as i16).to_be_bytes().to_vec();
        for (column, (name, oid, size)) in (1i16..).zip(cols) {
            b.extend(cs(name));
            b.extend_from_slice(&16_384u32.to_be_bytes()); // table oid
            b.extend_from_slice(&column.to_be_bytes());
            b.extend_from_slice(&oid.to_be_bytes());
            b.extend_from_slice(&size.to_be_bytes());
            b.extend_from_slice(&(-1i32).to_be_bytes()); // type modifier
            b.extend_from_slice(&0i16.to_be_bytes()); // text format
        }
        msg(b'T', &b)
    }

    /// `DataRow` of text values.
    pub(crate) fn data_row(vals: &[Option<&str>]) -> Vec<u8> {
        let mut b = (vals.len() as i16).to_be_bytes().to_vec();
        for v in vals {
            match v {
                Some(v) => {
                    b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    b.extend_from_slice(v.as_bytes());
                }
                None => b.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        msg(b'D', &b)
    }

    /// `CommandComplete`.
    pub(crate) fn command_complete(tag: &str) -> Vec<u8> {
        msg(b'C', &cs(tag))
    }
}

/// Redis (RESP2).
pub(crate) mod resp {
    /// A command as an array of bulk strings.
    pub(crate) fn command(args: &[&str]) -> Vec<u8> {
        let mut v = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            v.extend(format!("${}\r\n{a}\r\n", a.len()).into_bytes());
        }
        v
    }
}

/// TLS records.
pub(crate) mod tls {
    /// A TLS 1.2/1.3 ClientHello record naming `server_name` (SNI), one cipher suite.
    pub(crate) fn client_hello(server_name: &str) -> Vec<u8> {
        let name = server_name.as_bytes();
        let mut sni = Vec::new();
        sni.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes()); // list length
        sni.push(0); // host_name
        sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
        sni.extend_from_slice(name);
        let mut ext = vec![0, 0]; // server_name
        ext.extend_from_slice(&(sni.len() as u16).to_be_bytes());
        ext.extend(sni);
        let mut hello = vec![3, 3]; // legacy version 1.2
        hello.extend((0u8..32).map(|i| i.wrapping_mul(37))); // random
        hello.push(0); // session id
        hello.extend_from_slice(&[0, 2, 0x13, 0x01]); // TLS_AES_128_GCM_SHA256
        hello.extend_from_slice(&[1, 0]); // null compression
        hello.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        hello.extend(ext);
        let mut hs = vec![1]; // ClientHello
        hs.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
        hs.extend(hello);
        record(22, &hs)
    }

    /// A record of content type `ty` (22 handshake, 23 application data) around `body`.
    pub(crate) fn record(ty: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![ty, 3, 3];
        v.extend_from_slice(&(body.len() as u16).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    /// `n` bytes of ciphertext in one record of type `ty`.
    pub(crate) fn opaque(ty: u8, n: usize) -> Vec<u8> {
        let body: Vec<u8> = (0..n).map(|i| (i as u8).wrapping_mul(151) ^ 0x5a).collect();
        record(ty, &body)
    }
}
