//! The embedded index on 100,000 generated cassettes: correctness of search and of the
//! incremental refresh (new / changed / removed files). Timing belongs to the benchmark.
#![expect(
    unused_crate_dependencies,
    reason = "an integration test links every dependency of the package"
)]

use std::path::Path;

use timetracer::index::{Index, Query};

const N: usize = 100_000;
const METHODS: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];
const STATUSES: [i64; 5] = [200, 201, 404, 500, 0];

struct Spec {
    method: &'static str,
    path: String,
    status: i64,
    service: String,
    dep_host: Option<String>,
    db: bool,
    duration: f64,
    secs: u64,
}

fn spec(i: usize) -> Spec {
    Spec {
        method: METHODS[i % 4],
        path: if i.is_multiple_of(7) {
            format!("/users/{}", i % 1000)
        } else {
            format!("/items/{}/detail", i % 500)
        },
        status: STATUSES[i % 5],
        service: format!("svc{}", i % 3),
        dep_host: i
            .is_multiple_of(2)
            .then(|| format!("h{}.internal:8080", i % 10)),
        db: i.is_multiple_of(3),
        duration: (i % 1000) as f64,
        secs: 1_700_000_000 + i as u64,
    }
}

fn rfc3339(secs: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn json(i: usize, s: &Spec) -> String {
    let mut events = Vec::new();
    if let Some(h) = &s.dep_host {
        events.push(format!(r#"{{"eid":1,"type":"http.client","start_offset_ms":1.0,"duration_ms":2.0,"signature":{{"lib":"httpx","method":"GET","url":"http://{h}/x"}},"result":{{"status":200}}}}"#));
    }
    if s.db {
        events.push(format!(r#"{{"eid":{},"type":"db.query","start_offset_ms":1.0,"duration_ms":2.0,"signature":{{"lib":"sqlalchemy","method":"SELECT","url":"users"}},"result":{{"status":-1}}}}"#, events.len() + 1));
    }
    format!(
        r#"{{"schema_version":"1.0","session":{{"id":"{i:08x}-0000-4000-8000-000000000000","recorded_at":"{}","service":"{}","env":"local"}},"request":{{"method":"{}","path":"{}"}},"response":{{"status":{},"duration_ms":{}}},"events":[{}]}}"#,
        rfc3339(s.secs),
        s.service,
        s.method,
        s.path,
        s.status,
        s.duration,
        events.join(",")
    )
}

fn write_all(dir: &Path) {
    for d in 0..100 {
        std::fs::create_dir(dir.join(format!("d{d:03}"))).unwrap();
    }
    for i in 0..N {
        let s = spec(i);
        std::fs::write(
            dir.join(format!("d{:03}/{}__x__{i:08x}.json", i % 100, s.method)),
            json(i, &s),
        )
        .unwrap();
    }
}

fn count(f: impl Fn(&Spec) -> bool) -> usize {
    (0..N).map(spec).filter(|s| f(s)).count()
}

fn hits(idx: &Index, q: Query) -> usize {
    idx.search(&q).unwrap().len()
}

#[test]
fn hundred_thousand_cassettes() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    write_all(dir);
    let mut idx = Index::open(dir).unwrap();
    let rep = idx.refresh().unwrap();
    assert_eq!(
        (rep.added, rep.updated, rep.removed, rep.unchanged),
        (N, 0, 0, 0)
    );
    assert_eq!(idx.count().unwrap(), N);
    assert!(idx.errors().unwrap().is_empty());

    // search --status 0 matches only status 0 (the Python tool's `if status:` matched all).
    assert_eq!(
        hits(
            &idx,
            Query {
                status: Some(0),
                ..Query::default()
            }
        ),
        count(|s| s.status == 0)
    );
    assert_eq!(
        hits(
            &idx,
            Query {
                errors: true,
                ..Query::default()
            }
        ),
        count(|s| s.status == 0 || s.status >= 400)
    );
    assert_eq!(
        hits(
            &idx,
            Query {
                method: Some("post".into()),
                endpoint: Some("/users/*".into()),
                ..Query::default()
            }
        ),
        count(|s| s.method == "POST" && s.path.starts_with("/users/"))
    );
    assert_eq!(
        hits(
            &idx,
            Query {
                endpoint: Some("ITEMS/4".into()),
                ..Query::default()
            }
        ),
        count(|s| s.path.contains("items/4"))
    );
    assert_eq!(
        hits(
            &idx,
            Query {
                dep_host: Some("h4.internal".into()),
                service: Some("svc1".into()),
                ..Query::default()
            }
        ),
        count(|s| s.dep_host.as_deref() == Some("h4.internal:8080") && s.service == "svc1")
    );
    assert_eq!(
        hits(
            &idx,
            Query {
                dep_type: Some("db.query".into()),
                min_duration_ms: Some(900.0),
                ..Query::default()
            }
        ),
        count(|s| s.db && s.duration >= 900.0)
    );
    let since = 1_700_000_000.0 + 50_000.0;
    assert_eq!(
        hits(
            &idx,
            Query {
                since: Some(since),
                until: Some(since + 1000.0),
                ..Query::default()
            }
        ),
        1000
    );
    // Newest first, limited.
    let top = idx
        .search(&Query {
            limit: Some(3),
            ..Query::default()
        })
        .unwrap();
    assert_eq!(
        top.iter()
            .map(|e| e.summary.id[..8].to_owned())
            .collect::<Vec<_>>(),
        [
            format!("{:08x}", N - 1),
            format!("{:08x}", N - 2),
            format!("{:08x}", N - 3)
        ]
    );

    // Incremental: remove 10, change 5 (now status 0, new size), add 3, corrupt 1.
    for i in 0..10 {
        std::fs::remove_file(dir.join(format!(
            "d{:03}/{}__x__{i:08x}.json",
            i % 100,
            spec(i).method
        )))
        .unwrap();
    }
    for i in 10..15 {
        let mut s = spec(i);
        s.status = 0;
        s.path = "/changed/path/longer".into();
        std::fs::write(
            dir.join(format!("d{:03}/{}__x__{i:08x}.json", i % 100, s.method)),
            json(i, &s),
        )
        .unwrap();
    }
    for i in N..N + 3 {
        let s = spec(i);
        std::fs::write(dir.join(format!("new__{i:08x}.json")), json(i, &s)).unwrap();
    }
    std::fs::write(dir.join("broken.json"), b"{\"schema_version\":\"1.0\",").unwrap();
    let rep = idx.refresh().unwrap();
    assert_eq!((rep.added, rep.updated, rep.removed), (4, 5, 10), "{rep:?}");
    assert_eq!(rep.unchanged, N - 15);
    assert_eq!(idx.count().unwrap(), N - 10 + 3);
    assert_eq!(idx.errors().unwrap().len(), 1);
    assert_eq!(
        hits(
            &idx,
            Query {
                endpoint: Some("/changed/*".into()),
                status: Some(0),
                ..Query::default()
            }
        ),
        5
    );
    // A second refresh reads nothing.
    let rep = idx.refresh().unwrap();
    assert_eq!((rep.added, rep.updated, rep.removed), (0, 0, 0));
}
